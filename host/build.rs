fn main() {
    // sqlx::migrate! embeds ../migrations at compile time: a new migration must rebuild.
    println!("cargo:rerun-if-changed=../migrations");
}

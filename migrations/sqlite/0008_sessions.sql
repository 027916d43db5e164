-- Browser sessions: a login exchanges a token for a session cookie. Only the SHA-256 hash
-- of the cookie's value is stored; the session lives no longer than its token (lookups
-- join on the token row and require it unrevoked) and its expiry. Expired rows are
-- deleted lazily, a bounded batch at each login.

CREATE TABLE sessions (
    hash        TEXT PRIMARY KEY,
    token_id    TEXT NOT NULL REFERENCES tokens(id),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX sessions_by_token ON sessions (token_id, created_at);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

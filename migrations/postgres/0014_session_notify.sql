-- A logout deletes its session: other hosts' open streams that came by that session must
-- close, as they do when a token is revoked (0007), so a deleted session notifies `t` too
-- (the hosts then check the sessions and tokens their streams use). SQLite needs nothing:
-- its poller checks them after any commit.
CREATE TRIGGER sessions_notify AFTER DELETE ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION corral_notify_token();

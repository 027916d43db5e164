-- Other hosts learn of a committed event through LISTEN/NOTIFY: the notification is part
-- of the inserting transaction, so it is delivered exactly when the event commits (and
-- never for a rolled-back one), whichever code path inserted it, with no extra round trip.
-- The channel is per schema (see host/src/store/watch.rs); the payload is
-- `e RUN_ID TENANT_ID SEQ`, and `t` when a token is revoked or removed (open streams
-- using it must close).
CREATE FUNCTION corral_notify_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('corral_' || left(md5(current_schema()), 16),
                      'e ' || NEW.run_id || ' ' || NEW.tenant_id || ' ' || NEW.seq);
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION corral_notify_event();

CREATE FUNCTION corral_notify_token() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('corral_' || left(md5(current_schema()), 16), 't');
    RETURN NULL;
END
$$;

CREATE TRIGGER tokens_notify AFTER UPDATE OF revoked_at OR DELETE ON tokens
    FOR EACH STATEMENT EXECUTE FUNCTION corral_notify_token();

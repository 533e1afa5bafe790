-- Call events leave through an outbox: a service writes the event in the same transaction
-- as the state change it describes; the relay (softswitch events relay) publishes rows in id
-- order to RabbitMQ and marks them sent only after the broker confirmed them.

CREATE TABLE event_outbox (
    id            bigserial PRIMARY KEY,
    event_id      uuid NOT NULL,
    routing_key   text NOT NULL,
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at  timestamptz,
    CONSTRAINT event_outbox_event_id_unique UNIQUE (event_id),
    CONSTRAINT event_outbox_routing_key_shape CHECK (routing_key ~ '^[a-z_]+(\.[a-z_]+)+$')
);
CREATE INDEX event_outbox_unpublished_idx ON event_outbox (id) WHERE published_at IS NULL;
CREATE INDEX event_outbox_published_at_idx ON event_outbox (published_at) WHERE published_at IS NOT NULL;
COMMENT ON TABLE event_outbox IS 'Events waiting to be published (published_at NULL) and recently published ones; softswitch events relay publishes, softswitch events prune deletes old published rows';
COMMENT ON COLUMN event_outbox.event_id IS 'The event''s own id; consumers drop duplicates by it';
COMMENT ON COLUMN event_outbox.routing_key IS 'RabbitMQ routing key, e.g. call.ended';
COMMENT ON COLUMN event_outbox.payload IS 'The event as published (JSON)';
COMMENT ON COLUMN event_outbox.created_at IS 'When the event was written (its transaction committed shortly after)';
COMMENT ON COLUMN event_outbox.published_at IS 'When the broker confirmed it; NULL while waiting';

CREATE FUNCTION event_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('event_outbox', '');
    RETURN NULL;
END$$;

CREATE TRIGGER event_outbox_added AFTER INSERT ON event_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION event_outbox_notify();

-- One row per call, built from its events by softswitch events cdr.
CREATE TABLE cdr (
    call_id        text PRIMARY KEY,
    sip_call_id    text,
    caller         text NOT NULL DEFAULT '',
    callee         text NOT NULL DEFAULT '',
    route          text,
    started_at     timestamptz,
    answered_at    timestamptz,
    ended_at       timestamptz,
    wait_seconds   double precision NOT NULL DEFAULT 0 CHECK (wait_seconds >= 0),
    talk_seconds   double precision NOT NULL DEFAULT 0 CHECK (talk_seconds >= 0),
    disposition    text,
    cause          integer,
    legs           integer NOT NULL DEFAULT 0 CHECK (legs >= 0),
    queue          text,
    agent          text,
    pool_number    text,
    events         integer NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cdr_started_at_idx ON cdr (started_at);
COMMENT ON TABLE cdr IS 'Call detail records: one row per call (call_id ties its legs), built from call events; duplicates of an event never count twice';
COMMENT ON COLUMN cdr.call_id IS 'Our id of the call, shared by all its legs';
COMMENT ON COLUMN cdr.caller IS 'Caller number after routing rewrites';
COMMENT ON COLUMN cdr.callee IS 'Callee number after routing rewrites';
COMMENT ON COLUMN cdr.route IS 'Name of the route that decided the call';
COMMENT ON COLUMN cdr.wait_seconds IS 'From start to answer (or to end when unanswered)';
COMMENT ON COLUMN cdr.talk_seconds IS 'From answer to end';
COMMENT ON COLUMN cdr.disposition IS 'answered, no_answer, busy, failed, rejected, cancelled, abandoned; NULL while the call lasts';
COMMENT ON COLUMN cdr.cause IS 'Q.850 cause of the end';
COMMENT ON COLUMN cdr.legs IS 'Legs rung for the call (multiring, queue agents, failover)';
COMMENT ON COLUMN cdr.queue IS 'ACD queue the caller waited in';
COMMENT ON COLUMN cdr.agent IS 'Agent who answered';
COMMENT ON COLUMN cdr.pool_number IS '112 pool number the call used as caller number';
COMMENT ON COLUMN cdr.events IS 'Distinct events folded into this row';

CREATE TABLE cdr_event_seen (
    event_id  uuid PRIMARY KEY,
    seen_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE cdr_event_seen IS 'Event ids already folded into cdr, so a redelivered or duplicated event is dropped';

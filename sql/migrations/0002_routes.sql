-- Call routes: what the routing service decides every new call by.
-- Admins edit this table directly in SQL, or with `softswitch routes import/export` (JSON).
-- Every change fires NOTIFY route_changed; the routing service then reloads the whole table
-- and swaps it in atomically. Masks are RE2 regular expressions: a row whose mask RE2
-- refuses is skipped by the service and listed in route_load_error with the reason.

CREATE TABLE route (
    id                bigserial PRIMARY KEY,
    name              text NOT NULL,
    route_group       text NOT NULL DEFAULT '',
    priority          integer NOT NULL DEFAULT 100,
    enabled           boolean NOT NULL DEFAULT true,
    caller_mask       text NOT NULL DEFAULT '',
    caller_host_mask  text NOT NULL DEFAULT '',
    callee_mask       text NOT NULL DEFAULT '',
    callee_host_mask  text NOT NULL DEFAULT '',
    rewrite_caller    text NOT NULL DEFAULT '',
    rewrite_callee    text NOT NULL DEFAULT '',
    action            text NOT NULL,
    destinations      text[] NOT NULL DEFAULT '{}',
    parallel          boolean NOT NULL DEFAULT false,
    app               text NOT NULL DEFAULT '',
    app_args          text[] NOT NULL DEFAULT '{}',
    reject_code       integer,
    reject_reason     text,
    flags             text[] NOT NULL DEFAULT '{}',
    schedule          jsonb,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT route_name_unique UNIQUE (name),
    CONSTRAINT route_name_not_blank CHECK (btrim(name) <> ''),
    CONSTRAINT route_priority_range CHECK (priority BETWEEN -1000000 AND 1000000),
    CONSTRAINT route_action_known CHECK (action IN ('relay', 'app', 'reject', 'next')),
    CONSTRAINT route_relay_has_destinations
        CHECK (action <> 'relay' OR cardinality(destinations) > 0),
    CONSTRAINT route_destinations_only_for_relay
        CHECK (action = 'relay' OR (cardinality(destinations) = 0 AND NOT parallel)),
    CONSTRAINT route_destinations_are_sip_uris CHECK (
        cardinality(destinations) = 0
        OR array_to_string(destinations, ' ') ~ '^sips?:\S+( sips?:\S+)*$'),
    CONSTRAINT route_app_named CHECK ((action = 'app') = (app <> '')),
    CONSTRAINT route_app_args_only_for_app CHECK (action = 'app' OR cardinality(app_args) = 0),
    CONSTRAINT route_reject_complete CHECK (
        (action = 'reject') = (reject_code IS NOT NULL)
        AND (reject_code IS NULL OR (reject_code BETWEEN 400 AND 699
                                     AND coalesce(btrim(reject_reason), '') <> ''))
    ),
    CONSTRAINT route_schedule_is_object CHECK (schedule IS NULL OR jsonb_typeof(schedule) = 'object')
);
CREATE INDEX route_order_idx ON route (priority, id);

COMMENT ON TABLE route IS 'Call routes. Tried in ascending priority, ties by ascending id; the first route whose masks all match decides. Changes take effect within a second (NOTIFY route_changed).';
COMMENT ON COLUMN route.name IS 'Unique name, shown in decisions, CDRs and metrics';
COMMENT ON COLUMN route.route_group IS 'Folder for admins, e.g. PSTN, Virtual numbers (JSON: group); no effect on routing';
COMMENT ON COLUMN route.priority IS 'Lower is tried first; ties are broken by id';
COMMENT ON COLUMN route.enabled IS 'false: the route is ignored';
COMMENT ON COLUMN route.caller_mask IS 'RE2 regex on the caller number (From user); empty = any. Unanchored unless you write ^ and $';
COMMENT ON COLUMN route.caller_host_mask IS 'RE2 regex on the caller host (From domain); empty = any';
COMMENT ON COLUMN route.callee_mask IS 'RE2 regex on the callee number (Request-URI user); empty = any. A literal prefix after ^ (e.g. ^7495) makes lookups fast';
COMMENT ON COLUMN route.callee_host_mask IS 'RE2 regex on the callee host (Request-URI domain); empty = any';
COMMENT ON COLUMN route.rewrite_caller IS 'New caller number built from caller_mask groups (\1, \g<name>); empty = unchanged';
COMMENT ON COLUMN route.rewrite_callee IS 'New callee number built from callee_mask groups, e.g. 7\1 for ^8(\d{10})$; empty = unchanged';
COMMENT ON COLUMN route.action IS 'relay: to destinations; app: to an Asterisk Stasis app; reject: answer reject_code; next: rewrite and go on with the routes after this one';
COMMENT ON COLUMN route.destinations IS 'relay: SIP URIs tried in order (failover on timeout, 408, 5xx, 6xx except 486/603 unless flag failover_busy); a URI without user part gets the callee as user';
COMMENT ON COLUMN route.parallel IS 'relay: ring all destinations at once instead of in order';
COMMENT ON COLUMN route.app IS 'app: name of the Stasis application in Asterisk';
COMMENT ON COLUMN route.app_args IS 'app: extra arguments for the Stasis app (after the callee), e.g. {7,vip}';
COMMENT ON COLUMN route.reject_code IS 'reject: SIP status code 400-699';
COMMENT ON COLUMN route.reject_reason IS 'reject: SIP reason phrase';
COMMENT ON COLUMN route.flags IS 'Option names handed to Kamailio: record, nat, failover_busy; others pass through to route[ROUTE_FLAGS] of kamailio.cfg';
COMMENT ON COLUMN route.schedule IS 'Optional: {"timezone": "Europe/Moscow", "windows": [{"days": ["mon",...], "start": "09:00", "end": "18:00"}]}; the route matches only inside a window';
COMMENT ON COLUMN route.updated_at IS 'Last change (set by trigger)';

CREATE FUNCTION route_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END$$;

CREATE TRIGGER route_touch BEFORE UPDATE ON route
    FOR EACH ROW EXECUTE FUNCTION route_touch();

CREATE FUNCTION route_notify_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('route_changed', '');
    RETURN NULL;
END$$;

CREATE TRIGGER route_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON route
    FOR EACH STATEMENT EXECUTE FUNCTION route_notify_changed();

CREATE TABLE route_load_error (
    route_id    bigint PRIMARY KEY,
    route_name  text NOT NULL,
    reason      text NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE route_load_error IS 'Routes the routing service skipped at its last load, with the reason (e.g. a mask RE2 cannot compile). Rewritten at every load; empty when all routes are good.';
COMMENT ON COLUMN route_load_error.route_id IS 'route.id of the skipped row';
COMMENT ON COLUMN route_load_error.reason IS 'Why the row was skipped';

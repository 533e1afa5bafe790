-- The 112 / ЕДДС emergency number pool of door intercoms. A panel that calls 112 gets a free
-- number of its city's pool as caller ID; the call leaves through the city's gateway towards
-- the city's emergency number; when the emergency service calls that number back, the call
-- reaches the panel that used it. There are far more panels than numbers, so a number is
-- leased for the call and, after it, stays reserved for its panel for reservation_minutes
-- (the callback window); an expired reservation makes it free for the least-recently-used
-- choice. Admins edit the pool with `softswitch sos import/export/block/unblock/release`.
--
-- Leases are taken with SELECT ... FOR UPDATE SKIP LOCKED on single rows, so concurrent
-- emergency calls of one city never wait for each other (no city-wide lock).

CREATE TABLE sos_city (
    city_id              text PRIMARY KEY,
    name                 text NOT NULL,
    fias_code            text NOT NULL,
    emergency_number     text NOT NULL DEFAULT '112',
    gateway_uri          text NOT NULL,
    time_zone            text NOT NULL DEFAULT 'Europe/Moscow',
    fallback_number      text NOT NULL,
    exhaustion_policy    text NOT NULL DEFAULT 'take_oldest',
    reservation_minutes  integer NOT NULL DEFAULT 60,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sos_city_id_shape CHECK (city_id ~ '^\S+$'),
    CONSTRAINT sos_city_name_not_blank CHECK (name ~ '\S'),
    CONSTRAINT sos_city_fias_code_guid
        CHECK (fias_code ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'),
    CONSTRAINT sos_city_emergency_number_digits CHECK (emergency_number ~ '^[0-9]{2,15}$'),
    CONSTRAINT sos_city_gateway_uri_sip CHECK (gateway_uri ~ '^sips?:\S+$'),
    CONSTRAINT sos_city_time_zone_not_blank CHECK (time_zone ~ '^\S+$'),
    CONSTRAINT sos_city_fallback_number_e164 CHECK (fallback_number ~ '^\+[1-9][0-9]{6,14}$'),
    CONSTRAINT sos_city_exhaustion_policy_known
        CHECK (exhaustion_policy IN ('take_oldest', 'fallback')),
    CONSTRAINT sos_city_reservation_minutes_range CHECK (reservation_minutes BETWEEN 1 AND 1440)
);

COMMENT ON TABLE sos_city IS 'Cities of the 112 pool: where their emergency calls leave, and what happens when their pool has no free number';
COMMENT ON COLUMN sos_city.city_id IS 'Our key of the city (no spaces), e.g. novosibirsk; intercom_panel.city_id points here';
COMMENT ON COLUMN sos_city.name IS 'City name for people';
COMMENT ON COLUMN sos_city.fias_code IS 'FIAS/GAR GUID of the city (lowercase 8-4-4-4-12 hex), handed to the emergency service with the address';
COMMENT ON COLUMN sos_city.emergency_number IS 'Digits the call is sent to through the gateway (112, or the city''s ЕДДС number)';
COMMENT ON COLUMN sos_city.gateway_uri IS 'sip:/sips: URI of the VoIP gateway the city''s emergency calls leave through';
COMMENT ON COLUMN sos_city.time_zone IS 'IANA time zone name (Asia/Novosibirsk), for times shown to the city''s operators; checked by softswitch sos import';
COMMENT ON COLUMN sos_city.fallback_number IS 'E.164 caller ID used when the pool cannot give a number (exhausted, or empty)';
COMMENT ON COLUMN sos_city.exhaustion_policy IS 'No free number: take_oldest takes the number whose reservation is the oldest (that panel loses its callback), fallback uses fallback_number';
COMMENT ON COLUMN sos_city.reservation_minutes IS 'After a call the number stays reserved for its panel this long (the callback window), 1..1440';
COMMENT ON COLUMN sos_city.updated_at IS 'Last change (set by trigger)';

CREATE TRIGGER sos_city_touch BEFORE UPDATE ON sos_city
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- COLLATE "C": lease order ties are broken by number, and the pure policy (Python) compares
-- strings by code point; a linguistic collation could order them differently.
CREATE TABLE sos_number (
    number          text COLLATE "C" PRIMARY KEY,
    city_id         text NOT NULL
        CONSTRAINT sos_number_city_fkey REFERENCES sos_city ON DELETE RESTRICT,
    state           text NOT NULL DEFAULT 'free',
    panel_id        text,
    call_id         text,
    lease_how       text,
    leased_at       timestamptz,
    released_at     timestamptz,
    reserved_until  timestamptz,
    last_used_at    timestamptz,
    blocked_reason  text,
    CONSTRAINT sos_number_e164 CHECK (number ~ '^\+[1-9][0-9]{6,14}$'),
    CONSTRAINT sos_number_state_known CHECK (state IN ('free', 'leased', 'blocked')),
    CONSTRAINT sos_number_leased_complete CHECK (
        state <> 'leased'
        OR (panel_id IS NOT NULL AND call_id IS NOT NULL AND leased_at IS NOT NULL
            AND lease_how IS NOT NULL)),
    CONSTRAINT sos_number_call_only_when_leased CHECK (state = 'leased' OR call_id IS NULL),
    CONSTRAINT sos_number_reserved_for_a_panel CHECK (reserved_until IS NULL OR panel_id IS NOT NULL),
    CONSTRAINT sos_number_lease_how_known CHECK (lease_how IN ('reused', 'lru', 'taken_over')),
    CONSTRAINT sos_number_blocked_with_reason
        CHECK ((state = 'blocked') = (coalesce(blocked_reason, '') ~ '\S'))
);
-- The lease's three choices, in order: the panel's own number, the least recently used free
-- one, the free one with the oldest reservation (see softswitch/sos/policy.py).
CREATE INDEX sos_number_holder_idx ON sos_number (panel_id) WHERE panel_id IS NOT NULL;
CREATE INDEX sos_number_lru_idx ON sos_number (city_id, last_used_at NULLS FIRST, number)
    WHERE state = 'free';
CREATE INDEX sos_number_oldest_reservation_idx ON sos_number (city_id, reserved_until, number)
    WHERE state = 'free';

COMMENT ON TABLE sos_number IS 'Numbers of the 112 pool and who holds them. A number is free, leased (an emergency call uses it as caller ID) or blocked (never leased); a free number with reserved_until in the future is reserved for panel_id (callbacks reach that panel)';
COMMENT ON COLUMN sos_number.number IS 'E.164 number (+79131234567), shown to the emergency service as caller ID';
COMMENT ON COLUMN sos_number.city_id IS 'City whose panels use the number (a city with numbers cannot be deleted)';
COMMENT ON COLUMN sos_number.state IS 'free, leased or blocked';
COMMENT ON COLUMN sos_number.panel_id IS 'intercom_panel.panel_id of the current or last holder; reserved for it while reserved_until is in the future';
COMMENT ON COLUMN sos_number.call_id IS 'Our call id of the call that leases the number (only while leased); a release must name it';
COMMENT ON COLUMN sos_number.lease_how IS 'How the current or last lease chose the number: reused (the panel''s own), lru, taken_over (another panel''s oldest reservation)';
COMMENT ON COLUMN sos_number.leased_at IS 'Start of the current or last lease';
COMMENT ON COLUMN sos_number.released_at IS 'End of the last lease (NULL while leased)';
COMMENT ON COLUMN sos_number.reserved_until IS 'The holder''s callback window ends here; set at release to now + sos_city.reservation_minutes';
COMMENT ON COLUMN sos_number.last_used_at IS 'Last lease or release; the free number used longest ago (never used first) is leased first';
COMMENT ON COLUMN sos_number.blocked_reason IS 'Why the number is blocked (set exactly when state is blocked)';

CREATE FUNCTION sos_notify_reservation_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sos_reservation_changed', '');
    RETURN NULL;
END$$;
COMMENT ON FUNCTION sos_notify_reservation_changed() IS 'Statement trigger: NOTIFY sos_reservation_changed, so the routing service reloads its snapshot of who holds which pool number';

CREATE TRIGGER sos_reservation_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON sos_number
    FOR EACH STATEMENT EXECUTE FUNCTION sos_notify_reservation_changed();

CREATE TABLE sos_lease (
    id                     bigserial PRIMARY KEY,
    number                 text COLLATE "C" NOT NULL,
    city_id                text,
    panel_account          text NOT NULL,
    panel_id               text,
    call_id                text NOT NULL,
    how                    text NOT NULL,
    leased_at              timestamptz NOT NULL DEFAULT now(),
    released_at            timestamptz,
    callback_valid_until   timestamptz,
    CONSTRAINT sos_lease_how_known CHECK (how IN ('reused', 'lru', 'taken_over', 'fallback')),
    CONSTRAINT sos_lease_pool_number_has_city_and_panel
        CHECK (how = 'fallback' OR (city_id IS NOT NULL AND panel_id IS NOT NULL)),
    CONSTRAINT sos_lease_released_after_leased CHECK (released_at >= leased_at)
);
CREATE INDEX sos_lease_open_idx ON sos_lease (number) WHERE released_at IS NULL AND how <> 'fallback';
CREATE INDEX sos_lease_leased_at_idx ON sos_lease (leased_at);

COMMENT ON TABLE sos_lease IS 'Audit of every emergency call''s caller ID: which number which panel used, when, and until when a callback could reach it. Rows are only added and closed, never deleted by softswitch';
COMMENT ON COLUMN sos_lease.number IS 'Caller ID used: a pool number, or a fallback number (how = fallback)';
COMMENT ON COLUMN sos_lease.city_id IS 'The panel''s city; NULL for a panel without city (the global fallback number was used)';
COMMENT ON COLUMN sos_lease.panel_account IS 'SIP account that called 112';
COMMENT ON COLUMN sos_lease.panel_id IS 'intercom_panel.panel_id; NULL when the account is no known panel';
COMMENT ON COLUMN sos_lease.call_id IS 'Our call id';
COMMENT ON COLUMN sos_lease.how IS 'reused (the panel''s own number), lru, taken_over (another panel''s oldest reservation), fallback (no pool number)';
COMMENT ON COLUMN sos_lease.leased_at IS 'Start of the lease';
COMMENT ON COLUMN sos_lease.released_at IS 'End of the lease (release, admin release, block, or a new call of the same panel reusing the number); NULL while leased or for fallback numbers';
COMMENT ON COLUMN sos_lease.callback_valid_until IS 'Until when a callback to the number reached this panel (NULL for fallback numbers)';

ALTER TABLE intercom_panel ADD COLUMN city_id text
    CONSTRAINT intercom_panel_city_fkey REFERENCES sos_city ON DELETE SET NULL;
COMMENT ON COLUMN intercom_panel.city_id IS 'sos_city of the panel: its 112 calls use that city''s number pool and gateway; NULL: the global fallback number (SOFTSWITCH_SOS_FALLBACK_NUMBER)';

-- The routing service's snapshot maps a pool number to the panel's account.
CREATE TRIGGER sos_reservation_changed AFTER UPDATE OR DELETE OR TRUNCATE ON intercom_panel
    FOR EACH STATEMENT EXECUTE FUNCTION sos_notify_reservation_changed();

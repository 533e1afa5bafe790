-- The flat directory: which intercom panel serves which flats of a building, and what rings
-- for each flat when someone dials it on the panel's keypad. Admins edit it in SQL or with
-- `softswitch directory import/export` (JSON). When a CRM is configured
-- (SOFTSWITCH_DIRECTORY_CRM_URL) call apps ask the CRM first and these tables answer only
-- when the CRM is slow, down or answers nonsense.
--
-- Flat numbers are canonical decimals (no leading zeros): a panel turns the keypad entry N
-- into flat N + flat_offset, and any other spelling could never be reached.

CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END$$;
COMMENT ON FUNCTION touch_updated_at() IS 'BEFORE UPDATE trigger: sets updated_at of the row to now()';

CREATE TABLE intercom_panel (
    panel_id     text PRIMARY KEY,
    account      text NOT NULL,
    building     text NOT NULL,
    address      text NOT NULL DEFAULT '',
    flat_first   integer NOT NULL DEFAULT 1,
    flat_last    integer NOT NULL DEFAULT 9999,
    flat_offset  integer NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- Deferred so one import can move an account from one panel to another.
    CONSTRAINT intercom_panel_account_unique UNIQUE (account) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT intercom_panel_id_not_blank CHECK (panel_id ~ '\S'),
    CONSTRAINT intercom_panel_account_shape CHECK (account ~ '^[^@\s]+$'),
    CONSTRAINT intercom_panel_building_not_blank CHECK (building ~ '\S'),
    CONSTRAINT intercom_panel_flat_range
        CHECK (flat_first >= 0 AND flat_first <= flat_last AND flat_last <= 999999),
    CONSTRAINT intercom_panel_flat_offset_range CHECK (flat_offset BETWEEN -999999 AND 999999)
);
CREATE INDEX intercom_panel_building_idx ON intercom_panel (building);

COMMENT ON TABLE intercom_panel IS 'Door intercom panels: one SIP account at one entrance of one building. A call from the account to N rings flat N + flat_offset of the building when that is within flat_first..flat_last.';
COMMENT ON COLUMN intercom_panel.panel_id IS 'Our id of the panel (e.g. the CRM''s), shown in logs, events and pushes';
COMMENT ON COLUMN intercom_panel.account IS 'SIP account the panel registers with (subscriber.username, no @domain); no foreign key: the account may be created later';
COMMENT ON COLUMN intercom_panel.building IS 'Building key; the panel rings the flats (table flat) with this building';
COMMENT ON COLUMN intercom_panel.address IS 'Entrance address for people (shown on the apps'' incoming call screen)';
COMMENT ON COLUMN intercom_panel.flat_first IS 'Lowest flat number this panel may ring (after the offset)';
COMMENT ON COLUMN intercom_panel.flat_last IS 'Highest flat number this panel may ring (after the offset), at most 999999';
COMMENT ON COLUMN intercom_panel.flat_offset IS 'Added to the keypad entry to get the flat number, for panels of a second entrance that count from 1';
COMMENT ON COLUMN intercom_panel.updated_at IS 'Last change (set by trigger)';

CREATE TRIGGER intercom_panel_touch BEFORE UPDATE ON intercom_panel
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE flat (
    building    text NOT NULL,
    number      text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT flat_pkey PRIMARY KEY (building, number),
    CONSTRAINT flat_building_not_blank CHECK (building ~ '\S'),
    CONSTRAINT flat_number_decimal CHECK (number ~ '^(0|[1-9][0-9]{0,5})$')
);

COMMENT ON TABLE flat IS 'Flats a panel can ring; what rings is in flat_device (a flat without devices rings nothing)';
COMMENT ON COLUMN flat.building IS 'Building key, as in intercom_panel.building';
COMMENT ON COLUMN flat.number IS 'Flat number as a canonical decimal (12, not 012), 0..999999';
COMMENT ON COLUMN flat.updated_at IS 'Last change of the flat; softswitch directory import also sets it when it rewrites the flat''s devices';

CREATE TRIGGER flat_touch BEFORE UPDATE ON flat
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE flat_device (
    id        bigserial PRIMARY KEY,
    building  text NOT NULL,
    number    text NOT NULL,
    kind      text NOT NULL,
    target    text NOT NULL,
    label     text NOT NULL DEFAULT '',
    position  integer NOT NULL DEFAULT 0,
    CONSTRAINT flat_device_flat_fkey FOREIGN KEY (building, number)
        REFERENCES flat (building, number) ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT flat_device_unique UNIQUE (building, number, kind, target),
    CONSTRAINT flat_device_kind_known CHECK (kind IN ('sip', 'mobile', 'forward')),
    CONSTRAINT flat_device_target_not_blank CHECK (target ~ '\S'),
    CONSTRAINT flat_device_target_shape CHECK (
        CASE kind
            WHEN 'forward' THEN target ~ '^(sips?:\S+|\+?[0-9]+)$'
            ELSE target ~ '^[^@\s]+$'
        END)
);

COMMENT ON TABLE flat_device IS 'What rings for a flat: all devices of the flat ring at once when its number is dialled on a panel';
COMMENT ON COLUMN flat_device.building IS 'Flat''s building (flat.building)';
COMMENT ON COLUMN flat_device.number IS 'Flat''s number (flat.number)';
COMMENT ON COLUMN flat_device.kind IS 'sip: a SIP account (phone, handset); mobile: a mobile-app account, woken by a push first; forward: a fixed forward to a SIP URI or a number';
COMMENT ON COLUMN flat_device.target IS 'sip, mobile: account name (subscriber.username, no @domain); forward: sip:/sips: URI or digits with an optional leading +';
COMMENT ON COLUMN flat_device.label IS 'For people: "Kitchen handset", "Anna''s phone"';
COMMENT ON COLUMN flat_device.position IS 'Order of the devices in lists and exports (ties by id); all devices ring at once';

-- Tables Kamailio itself reads and writes: SIP accounts (digest auth) and registrations.
-- Column names and table versions are Kamailio 6.1's own (auth_db, usrloc): Kamailio checks
-- the `version` table at start and refuses tables of another version.

CREATE TABLE version (
    id            serial PRIMARY KEY,
    table_name    varchar(32) NOT NULL,
    table_version integer NOT NULL DEFAULT 0,
    CONSTRAINT version_table_name_idx UNIQUE (table_name)
);
COMMENT ON TABLE version IS 'Kamailio schema versions per table; Kamailio refuses a table whose version it does not expect';
INSERT INTO version (table_name, table_version) VALUES ('version', 1);

CREATE TABLE subscriber (
    id        serial PRIMARY KEY,
    username  varchar(64) NOT NULL DEFAULT '',
    domain    varchar(64) NOT NULL DEFAULT '',
    password  varchar(64) NOT NULL DEFAULT '',
    ha1       varchar(128) NOT NULL DEFAULT '',
    ha1b      varchar(128) NOT NULL DEFAULT '',
    CONSTRAINT subscriber_account_idx UNIQUE (username, domain),
    CONSTRAINT subscriber_username_is_sip_user CHECK (username ~ '^[A-Za-z0-9._~+-]{1,64}$'),
    CONSTRAINT subscriber_domain_not_empty CHECK (domain <> ''),
    CONSTRAINT subscriber_no_clear_password CHECK (password = ''),
    CONSTRAINT subscriber_ha1_is_md5_hex CHECK (ha1 ~ '^[0-9a-f]{32}$')
);
CREATE INDEX subscriber_username_idx ON subscriber (username);
COMMENT ON TABLE subscriber IS 'SIP accounts (phones, intercom panels, mobile apps) that register and authenticate with digest auth';
COMMENT ON COLUMN subscriber.username IS 'SIP user part, e.g. 1001; what the phone puts in its From/To and auth username';
COMMENT ON COLUMN subscriber.domain IS 'SIP domain (realm) the account belongs to; must equal the domain the phone registers in';
COMMENT ON COLUMN subscriber.password IS 'Always empty: clear-text passwords are never stored, only ha1';
COMMENT ON COLUMN subscriber.ha1 IS 'md5(username:domain:password) in lowercase hex, as Kamailio auth_db expects';
COMMENT ON COLUMN subscriber.ha1b IS 'md5(username@domain:domain:password) for phones that send user@domain as auth username; may be empty';
INSERT INTO version (table_name, table_version) VALUES ('subscriber', 7);

CREATE TABLE location (
    id             serial PRIMARY KEY,
    ruid           varchar(64) NOT NULL DEFAULT '',
    username       varchar(64) NOT NULL DEFAULT '',
    domain         varchar(64) DEFAULT NULL,
    contact        varchar(512) NOT NULL DEFAULT '',
    received       varchar(128) DEFAULT NULL,
    path           varchar(512) DEFAULT NULL,
    expires        timestamp without time zone NOT NULL DEFAULT '2030-05-28 21:32:15',
    q              real NOT NULL DEFAULT 1.0,
    callid         varchar(255) NOT NULL DEFAULT 'Default-Call-ID',
    cseq           integer NOT NULL DEFAULT 1,
    last_modified  timestamp without time zone NOT NULL DEFAULT '2000-01-01 00:00:01',
    flags          integer NOT NULL DEFAULT 0,
    cflags         integer NOT NULL DEFAULT 0,
    user_agent     varchar(255) NOT NULL DEFAULT '',
    socket         varchar(64) DEFAULT NULL,
    methods        integer DEFAULT NULL,
    instance       varchar(255) DEFAULT NULL,
    reg_id         integer NOT NULL DEFAULT 0,
    server_id      integer NOT NULL DEFAULT 0,
    connection_id  integer NOT NULL DEFAULT 0,
    keepalive      integer NOT NULL DEFAULT 0,
    partition      integer NOT NULL DEFAULT 0,
    CONSTRAINT location_ruid_idx UNIQUE (ruid)
);
CREATE INDEX location_account_contact_idx ON location (username, domain, contact);
CREATE INDEX location_expires_idx ON location (expires);
CREATE INDEX location_tcpcon_idx ON location (connection_id);
CREATE INDEX location_connection_idx ON location (server_id, connection_id);
COMMENT ON TABLE location IS 'Registered contacts of SIP accounts, written by Kamailio usrloc; read-only for admins';
COMMENT ON COLUMN location.contact IS 'Contact URI the device registered';
COMMENT ON COLUMN location.received IS 'Source address the REGISTER came from when behind NAT';
COMMENT ON COLUMN location.expires IS 'When the registration lapses unless refreshed (server local time)';
COMMENT ON COLUMN location.user_agent IS 'User-Agent header of the registering device';
INSERT INTO version (table_name, table_version) VALUES ('location', 9);

CREATE TABLE location_attrs (
    id             serial PRIMARY KEY,
    ruid           varchar(64) NOT NULL DEFAULT '',
    username       varchar(64) NOT NULL DEFAULT '',
    domain         varchar(64) DEFAULT NULL,
    aname          varchar(64) NOT NULL DEFAULT '',
    atype          integer NOT NULL DEFAULT 0,
    avalue         varchar(512) NOT NULL DEFAULT '',
    last_modified  timestamp without time zone NOT NULL DEFAULT '2000-01-01 00:00:01'
);
CREATE INDEX location_attrs_account_record_idx ON location_attrs (username, domain, ruid);
CREATE INDEX location_attrs_last_modified_idx ON location_attrs (last_modified);
COMMENT ON TABLE location_attrs IS 'Extra attributes of registrations (Kamailio usrloc xavp); written by Kamailio';
INSERT INTO version (table_name, table_version) VALUES ('location_attrs', 1);

-- Bearer tokens of the admin HTTP API (`softswitch admin serve`). `softswitch admin token add`
-- prints a token once; the database keeps only its SHA-256, so a copy of this table (a
-- backup, a replica) lets nobody in. Revoked tokens stay as a record of who had access.

CREATE TABLE admin_token (
    name          text PRIMARY KEY,
    role          text NOT NULL,
    token_sha256  bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    CONSTRAINT admin_token_name_shape CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    CONSTRAINT admin_token_role_known CHECK (role IN ('admin', 'supervisor', 'read_only')),
    CONSTRAINT admin_token_sha256_length CHECK (octet_length(token_sha256) = 32),
    CONSTRAINT admin_token_sha256_unique UNIQUE (token_sha256)
);

COMMENT ON TABLE admin_token IS 'Bearer tokens of the admin HTTP API, stored only as SHA-256; managed with softswitch admin token add/list/revoke';
COMMENT ON COLUMN admin_token.name IS 'Who or what holds the token (a person, a monitoring system), e.g. noc-grafana; letters, digits and ._@-, up to 64';
COMMENT ON COLUMN admin_token.role IS 'What the token may do: read_only (every GET), supervisor (read, plus ACD supervisor actions on waiting callers and agents), admin (everything)';
COMMENT ON COLUMN admin_token.token_sha256 IS 'SHA-256 of the token text (32 bytes); the token itself is shown once when created and never stored';
COMMENT ON COLUMN admin_token.created_at IS 'When the token was created';
COMMENT ON COLUMN admin_token.last_used_at IS 'When the token last authenticated a request; NULL: never used';
COMMENT ON COLUMN admin_token.revoked_at IS 'When the token was revoked (it authenticates nothing from then on); NULL: valid';

-- Accounts own API keys and links. Keys are stored only as SHA-256 digests.
CREATE TABLE accounts (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          bigserial PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES accounts (id),
    prefix      text NOT NULL,              -- first characters of the key, to tell keys apart
    digest      bytea NOT NULL UNIQUE,      -- sha256(key)
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- A deleted link keeps its row (deleted_at set): its code is never handed out again, so a short
-- link already shared cannot be taken over to point somewhere else, and late clicks still count.
CREATE TABLE links (
    id             bigserial PRIMARY KEY,
    account_id     bigint NOT NULL REFERENCES accounts (id),
    code           text NOT NULL UNIQUE,
    url            text NOT NULL,
    redirect_type  smallint NOT NULL DEFAULT 302 CHECK (redirect_type IN (301, 302, 307, 308)),
    expires_at     timestamptz,
    expired_url    text,
    forward_query  boolean NOT NULL DEFAULT false,
    tags           text[] NOT NULL DEFAULT '{}',
    disabled       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at     timestamptz
);

-- Keyset pagination per account, newest first; tag filter.
CREATE INDEX links_account_id_idx ON links (account_id, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX links_tags_idx ON links USING gin (tags) WHERE deleted_at IS NULL;

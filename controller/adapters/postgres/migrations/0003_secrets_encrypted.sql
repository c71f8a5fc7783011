-- 0003_secrets_encrypted: secret values are stored encrypted (issue 7).
-- value_enc is version byte | 96-bit nonce | AES-256-GCM ciphertext and tag,
-- with (name, key) as associated data; key_id names the key (a short hash of it,
-- never the key). See controller/adapters/secretbox.py.
-- The key never reaches the database, so rows written in plaintext before this
-- migration cannot be encrypted here: Store.connect encrypts them (one
-- transaction) and sets their `value` to NULL. New rows never carry `value`.
ALTER TABLE secrets
    ALTER COLUMN value DROP NOT NULL,
    ADD COLUMN value_enc bytea,
    ADD COLUMN key_id    text,
    ADD CONSTRAINT secrets_one_value
        CHECK ((value IS NULL) <> (value_enc IS NULL)),
    ADD CONSTRAINT secrets_key_id_with_ciphertext
        CHECK ((value_enc IS NULL) = (key_id IS NULL));

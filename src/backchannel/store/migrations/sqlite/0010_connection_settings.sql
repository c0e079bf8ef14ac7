-- Destinations as plug-ins: a connection keeps, besides its pixel (the account's public id)
-- and token (its main secret), the other values its destination declares (Credential):
-- plain ones as a JSON object (an OAuth client id, conversion actions…) and secret ones as
-- one Fernet ciphertext of a JSON object (a refresh token, a client secret…). NULL: none.
ALTER TABLE connections ADD COLUMN settings TEXT;
ALTER TABLE connections ADD COLUMN secrets_encrypted BLOB;

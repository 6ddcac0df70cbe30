-- Group-2 identity (本人確認): only the verified attributes and the check itself are kept.
-- Never the My Number (個人番号): no column can hold it, and forms refuse one.
ALTER TABLE applications
    ADD COLUMN identity_name        text,
    ADD COLUMN identity_address     text,
    ADD COLUMN identity_birth_date  date,
    ADD COLUMN identity_cert_serial text,
    ADD COLUMN identity_cert_issuer text,
    ADD COLUMN identity_checked_at  timestamptz,
    ADD COLUMN identity_result      text;

-- 住民票の写し online: Koriyama mails the copy only to the address on the resident register,
-- which is the identity check (as かんたん電子申請 requests do), so the online request needs no
-- card signature: group 1. The family-register certificates stay group 2.
UPDATE procedures SET proc_group = 1, updated_at = now() WHERE code = 'JUMINHYO';

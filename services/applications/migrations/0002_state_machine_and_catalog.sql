-- The application state machine's columns, the procedure catalog and idempotency keys.

ALTER TABLE applications
    ADD COLUMN applicant_id      uuid,
    ADD COLUMN form              jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN fee_yen           integer NOT NULL DEFAULT 0 CHECK (fee_yen >= 0),
    ADD COLUMN payment_id        uuid,
    ADD COLUMN paid_at           timestamptz,
    ADD COLUMN decided_at        timestamptz,
    ADD COLUMN rejection_reason  text,
    ADD COLUMN certificate_number text UNIQUE;
ALTER TABLE applications ADD CONSTRAINT applications_status CHECK (status IN (
    'submitted', 'awaiting_payment', 'paid', 'in_review', 'approved', 'rejected', 'withdrawn',
    'certificate_issued'));
CREATE INDEX applications_status_submitted ON applications (status, submitted_at);
CREATE INDEX applications_applicant ON applications (applicant_id, submitted_at)
    WHERE applicant_id IS NOT NULL;

-- 手続き: the city's procedure catalog.
CREATE TABLE procedures (
    code                   text PRIMARY KEY CHECK (code ~ '^[A-Z0-9][A-Z0-9_-]{1,31}$'),
    name_ja                text NOT NULL CHECK (length(name_ja) BETWEEN 1 AND 200),
    department             text NOT NULL CHECK (length(department) BETWEEN 1 AND 100),
    proc_group             smallint NOT NULL CHECK (proc_group IN (1, 2)),
    fee_yen                integer NOT NULL CHECK (fee_yen >= 0),
    yields_certificate     boolean NOT NULL,
    form_schema            jsonb NOT NULL,
    online_since           date,
    planned_online_quarter text CHECK (planned_online_quarter ~ '^\d{4}-Q[1-4]$'),
    sample                 boolean NOT NULL DEFAULT false,
    search_text            text NOT NULL,
    registered_at          timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX procedures_department ON procedures (department, code);
CREATE INDEX procedures_group_online ON procedures (proc_group, (online_since IS NOT NULL), code);

-- Idempotency-Key of a POST: the response replayed for the same key and body, kept >= 24 h.
CREATE TABLE idempotency_keys (
    key          text PRIMARY KEY,
    request_hash text NOT NULL,
    status_code  integer,
    response     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- The hand-written core of the catalog: the common certificates with their real fees
-- (戸籍 450, 除籍・改製原戸籍 750; 300 where Koriyama's own figure is not known) and two
-- fee-free group-1 procedures. The generated sample catalog is imported with
-- `cityhall catalog import services/applications/catalog/sample_catalog.json`.
INSERT INTO procedures (code, name_ja, department, proc_group, fee_yen, yields_certificate,
                        form_schema, online_since, planned_online_quarter, search_text) VALUES
('JUMINHYO', '住民票の写しの交付', '市民部', 2, 300, true,
 '{"type": "object", "additionalProperties": false, "properties": {
    "copies": {"type": "integer", "minimum": 1, "maximum": 10, "title": "通数"},
    "purpose": {"type": "string", "maxLength": 200, "title": "使用目的"},
    "include_household": {"type": "boolean", "title": "世帯全員"},
    "include_honseki": {"type": "boolean", "title": "本籍・筆頭者の記載"}}}',
 '2021-04-01', NULL, ''),
('KOSEKI_TOHON', '戸籍謄本（全部事項証明書）の交付', '市民部', 2, 450, true,
 '{"type": "object", "additionalProperties": false, "required": ["honseki", "hittosha"],
   "properties": {
    "honseki": {"type": "string", "minLength": 1, "maxLength": 200, "title": "本籍"},
    "hittosha": {"type": "string", "minLength": 1, "maxLength": 100, "title": "筆頭者"},
    "copies": {"type": "integer", "minimum": 1, "maximum": 10, "title": "通数"},
    "purpose": {"type": "string", "maxLength": 200, "title": "使用目的"}}}',
 '2021-04-01', NULL, ''),
('KOSEKI_SHOHON', '戸籍抄本（個人事項証明書）の交付', '市民部', 2, 450, true,
 '{"type": "object", "additionalProperties": false, "required": ["honseki", "hittosha", "person"],
   "properties": {
    "honseki": {"type": "string", "minLength": 1, "maxLength": 200, "title": "本籍"},
    "hittosha": {"type": "string", "minLength": 1, "maxLength": 100, "title": "筆頭者"},
    "person": {"type": "string", "minLength": 1, "maxLength": 100, "title": "必要な方"},
    "copies": {"type": "integer", "minimum": 1, "maximum": 10, "title": "通数"}}}',
 '2021-04-01', NULL, ''),
('JOSEKI_TOHON', '除籍謄本の交付', '市民部', 2, 750, true,
 '{"type": "object", "additionalProperties": false, "required": ["honseki", "hittosha"],
   "properties": {
    "honseki": {"type": "string", "minLength": 1, "maxLength": 200, "title": "本籍"},
    "hittosha": {"type": "string", "minLength": 1, "maxLength": 100, "title": "筆頭者"},
    "copies": {"type": "integer", "minimum": 1, "maximum": 10, "title": "通数"}}}',
 NULL, '2027-Q1', ''),
('KAISEI_GENKOSEKI', '改製原戸籍謄本の交付', '市民部', 2, 750, true,
 '{"type": "object", "additionalProperties": false, "required": ["honseki", "hittosha"],
   "properties": {
    "honseki": {"type": "string", "minLength": 1, "maxLength": 200, "title": "本籍"},
    "hittosha": {"type": "string", "minLength": 1, "maxLength": 100, "title": "筆頭者"},
    "copies": {"type": "integer", "minimum": 1, "maximum": 10, "title": "通数"}}}',
 NULL, '2027-Q1', ''),
('KOSEKI_FUHYO', '戸籍の附票の写しの交付', '市民部', 2, 300, true,
 '{"type": "object", "additionalProperties": false, "required": ["honseki", "hittosha"],
   "properties": {
    "honseki": {"type": "string", "minLength": 1, "maxLength": 200, "title": "本籍"},
    "hittosha": {"type": "string", "minLength": 1, "maxLength": 100, "title": "筆頭者"},
    "copies": {"type": "integer", "minimum": 1, "maximum": 10, "title": "通数"}}}',
 NULL, '2026-Q4', ''),
('INKAN_SHOMEI', '印鑑登録証明書の交付', '市民部', 2, 300, true,
 '{"type": "object", "additionalProperties": false, "properties": {
    "copies": {"type": "integer", "minimum": 1, "maximum": 10, "title": "通数"},
    "purpose": {"type": "string", "maxLength": 200, "title": "使用目的"}}}',
 NULL, '2027-Q2', ''),
('SHOTOKU_KAZEI_SHOMEI', '所得課税証明書の交付', '税務部', 2, 300, true,
 '{"type": "object", "additionalProperties": false, "required": ["fiscal_year"],
   "properties": {
    "fiscal_year": {"type": "integer", "minimum": 2000, "maximum": 2100, "title": "年度"},
    "copies": {"type": "integer", "minimum": 1, "maximum": 10, "title": "通数"},
    "purpose": {"type": "string", "maxLength": 200, "title": "使用目的"}}}',
 '2022-04-01', NULL, ''),
('NOZEI_SHOMEI', '納税証明書の交付', '税務部', 2, 300, true,
 '{"type": "object", "additionalProperties": false, "required": ["tax_item", "fiscal_year"],
   "properties": {
    "tax_item": {"enum": ["市県民税", "固定資産税", "軽自動車税", "国民健康保険税"],
                 "title": "税目"},
    "fiscal_year": {"type": "integer", "minimum": 2000, "maximum": 2100, "title": "年度"},
    "copies": {"type": "integer", "minimum": 1, "maximum": 10, "title": "通数"}}}',
 '2022-04-01', NULL, ''),
('BOSAI_MAIL_TOROKU', '防災メールの登録', '総務部', 1, 0, false,
 '{"type": "object", "additionalProperties": false, "required": ["email", "areas"],
   "properties": {
    "email": {"type": "string", "format": "email", "maxLength": 254, "title": "メールアドレス"},
    "areas": {"type": "array", "minItems": 1, "items": {"type": "string"}, "title": "地区"}}}',
 '2020-10-01', NULL, ''),
('SHIMIN_NO_KOE', '市民の声（意見・提案）の受付', '政策開発部', 1, 0, false,
 '{"type": "object", "additionalProperties": false, "required": ["subject", "body"],
   "properties": {
    "subject": {"type": "string", "minLength": 1, "maxLength": 100, "title": "件名"},
    "body": {"type": "string", "minLength": 1, "maxLength": 4000, "title": "内容"}}}',
 '2020-10-01', NULL, '');
UPDATE procedures SET search_text = lower(code || ' ' || name_ja || ' ' || department);

-- 証明書番号: 072036 (Koriyama's local-government code), the year, then this sequence.
CREATE SEQUENCE certificate_numbers;

-- Whose fee a payment request is (the pseudonymous applicant id of ApplicationPaymentRequested),
-- so only that applicant (or staff) may read it. Null for counter and mail applications.
ALTER TABLE payment_requests ADD COLUMN applicant_id uuid;

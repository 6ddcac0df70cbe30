-- A procedure filter on the finest turnaround histogram (by month, with a procedure or a
-- department) read all of it: its key starts with the month.
CREATE INDEX turnaround_histogram_procedure ON turnaround_histogram (procedure_code, month);

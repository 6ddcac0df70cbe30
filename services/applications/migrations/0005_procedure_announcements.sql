-- When each procedure was last announced (ProcedureRegistered/Updated/Onlined). The core of
-- migration 0002 starts unannounced; the next `cityhall catalog import` announces it, so that
-- reporting's coverage counts every procedure without a fresh service publishing on its own.
ALTER TABLE procedures ADD COLUMN announced_at timestamptz;

-- The console's alerts timeline reads the audit log by action, newest first.
CREATE INDEX IF NOT EXISTS audit_log_action_seq ON audit_log (action, seq);

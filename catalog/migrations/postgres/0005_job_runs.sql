-- The run of a job an embedder started last (a random id from its `started` report). Attempts
-- count runs that really started, once each: a report delivered twice (a writer that died after
-- its commit and before its ack) carries the same run id and is not counted again.
ALTER TABLE training_jobs ADD COLUMN last_run BIGINT;

-- `imgsearch status` counts the failed jobs and lists the failed assets with their reasons; without
-- an index both read every job (1 s and 5.5 s at a million jobs). Failed jobs are few: a partial
-- index holds only them and costs the jobs that succeed nothing.
CREATE INDEX training_jobs_failed ON training_jobs (status) WHERE status = 'failed';

-- Paths compare byte by byte, as SQLite compares them: a folder's subtree (`dir/` up to `dir0`) is
-- then one range of the path index, whatever the database's collation (under en_US, '/' and '0'
-- are ignored at the first level, and the range would not be the subtree).
ALTER TABLE image_assets ALTER COLUMN path TYPE TEXT COLLATE "C";

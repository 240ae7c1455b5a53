-- Paths are stored in protocol::paths' lossless form from this version on: a byte that is not UTF-8
-- is written \xNN and a backslash \\. Rows written before hold plain text, so their backslashes are
-- doubled here; every other path reads the same in both forms.
UPDATE image_assets SET path = replace(path, '\', '\\') WHERE instr(path, '\') > 0;
UPDATE training_sessions SET root_path = replace(root_path, '\', '\\') WHERE instr(root_path, '\') > 0;
UPDATE training_subdirectories SET path = replace(path, '\', '\\') WHERE instr(path, '\') > 0;

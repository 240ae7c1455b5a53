-- A scan that no longer finds an asset's file marks it deleted (its vector is removed).
ALTER TABLE image_assets ADD COLUMN deleted_at TIMESTAMPTZ;

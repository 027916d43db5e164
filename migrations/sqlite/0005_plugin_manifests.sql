-- A registered plugin's permission manifest (JSON; NULL grants nothing).
ALTER TABLE plugins ADD COLUMN manifest TEXT;

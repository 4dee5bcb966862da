-- expires_at within what every reader of a link can take back: Python's datetime (asyncpg) holds
-- years 1 to 9999 and no infinity. Rows stored outside that before the API checked it (year
-- 10000 from "9999-12-31T23:59:59-15:00", or +-infinity) broke their account's link list; they
-- are moved to the nearest instant inside it, and the constraint keeps any writer inside.
UPDATE links SET expires_at = '9999-12-31 23:59:59.999998+00'
WHERE expires_at >= '9999-12-31 23:59:59.999999+00';
UPDATE links SET expires_at = '0001-01-01 00:00:00.000001+00'
WHERE expires_at <= '0001-01-01 00:00:00+00';

ALTER TABLE links ADD CONSTRAINT links_expires_at_readable CHECK (
    expires_at > '0001-01-01 00:00:00+00' AND expires_at < '9999-12-31 23:59:59.999999+00'
);

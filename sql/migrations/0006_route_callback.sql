-- Route action `callback`: a call to an emergency-pool number goes to the intercom panel that
-- holds the number's reservation (Stasis app `panel`, or the app named in `app`); with no
-- reservation, matching goes on with the routes after it, like `next`.

ALTER TABLE route DROP CONSTRAINT route_action_known;
ALTER TABLE route ADD CONSTRAINT route_action_known
    CHECK (action IN ('relay', 'app', 'reject', 'next', 'callback'));

ALTER TABLE route DROP CONSTRAINT route_app_named;
ALTER TABLE route ADD CONSTRAINT route_app_named
    CHECK (CASE action WHEN 'app' THEN app <> '' WHEN 'callback' THEN true ELSE app = '' END);

COMMENT ON COLUMN route.action IS 'relay | app | reject | next (rewrite, then continue with the routes after this one) | callback (to the panel holding the called emergency-pool number; no reservation: continue like next)';
COMMENT ON COLUMN route.app IS 'Stasis application for action app (required) or callback (optional, default panel)';

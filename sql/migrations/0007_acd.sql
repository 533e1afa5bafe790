-- ACD (call-centre queues): queues, agents, which agent serves which queue, and the callback
-- requests of callers who chose to be called back rather than wait. Admins edit queues,
-- agents and memberships with `softswitch acd import/export`; the ACD Stasis app reads them
-- (reloading on NOTIFY acd_config_changed) and writes only the agents' runtime columns
-- (status and counters, so a restart keeps them) and the callback requests.
--
-- The numeric ranges below are also checked by acd/store.py before an import, so an
-- admin gets an error naming the record and field rather than a constraint name.

CREATE TABLE acd_queue (
    queue_id               text PRIMARY KEY,
    name                   text NOT NULL DEFAULT '',
    strategy               text NOT NULL DEFAULT 'ring_all',
    ring_timeout_seconds   double precision NOT NULL DEFAULT 15,
    retry_seconds          double precision NOT NULL DEFAULT 5,
    max_wait_seconds       double precision,
    overflow               text,
    wrap_up_seconds        double precision NOT NULL DEFAULT 0,
    max_no_answers         integer NOT NULL DEFAULT 0,
    music_class            text NOT NULL DEFAULT 'default',
    announce_seconds       double precision NOT NULL DEFAULT 0,
    callback_enabled       boolean NOT NULL DEFAULT false,
    callback_key           text NOT NULL DEFAULT '1',
    callback_order         text NOT NULL DEFAULT 'agent_first',
    service_level_seconds  double precision NOT NULL DEFAULT 20,
    abandon_short_seconds  double precision NOT NULL DEFAULT 5,
    goodbye                text NOT NULL DEFAULT 'sound:vm-goodbye',
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT acd_queue_id_shape CHECK (queue_id ~ '^\S+$'),
    CONSTRAINT acd_queue_strategy_known CHECK (strategy IN (
        'ring_all', 'linear', 'round_robin', 'random', 'weighted_random', 'least_recent',
        'fewest_calls', 'least_talk_time')),
    CONSTRAINT acd_queue_ring_timeout_range CHECK (ring_timeout_seconds BETWEEN 1 AND 600),
    CONSTRAINT acd_queue_retry_range CHECK (retry_seconds BETWEEN 0 AND 600),
    CONSTRAINT acd_queue_max_wait_range CHECK (max_wait_seconds BETWEEN 1 AND 86400),
    CONSTRAINT acd_queue_overflow_shape
        CHECK (overflow ~ '^(queue:\S+|sips?:\S+|\+?[0-9*#]{1,32})$'),
    -- A queue overflowing into itself would keep its callers forever.
    CONSTRAINT acd_queue_overflow_not_itself CHECK (overflow <> 'queue:' || queue_id),
    CONSTRAINT acd_queue_wrap_up_range CHECK (wrap_up_seconds BETWEEN 0 AND 3600),
    CONSTRAINT acd_queue_max_no_answers_range CHECK (max_no_answers BETWEEN 0 AND 100),
    CONSTRAINT acd_queue_music_class_not_blank CHECK (music_class ~ '\S'),
    CONSTRAINT acd_queue_announce_range
        CHECK (announce_seconds = 0 OR announce_seconds BETWEEN 10 AND 3600),
    CONSTRAINT acd_queue_callback_key_dtmf CHECK (callback_key ~ '^[0-9*#]$'),
    CONSTRAINT acd_queue_callback_order_known
        CHECK (callback_order IN ('agent_first', 'caller_first')),
    CONSTRAINT acd_queue_service_level_range CHECK (service_level_seconds BETWEEN 1 AND 3600),
    CONSTRAINT acd_queue_abandon_short_range CHECK (abandon_short_seconds BETWEEN 0 AND 600),
    CONSTRAINT acd_queue_goodbye_not_blank CHECK (goodbye ~ '\S')
);

COMMENT ON TABLE acd_queue IS 'ACD queues: how waiting callers are offered to the queue''s agents, how long they may wait and where they go then';
COMMENT ON COLUMN acd_queue.queue_id IS 'Our key of the queue (no spaces), e.g. support; routes send callers to it, overflow names it as queue:<id>';
COMMENT ON COLUMN acd_queue.name IS 'Queue name for people (wallboards, reports); may be empty';
COMMENT ON COLUMN acd_queue.strategy IS 'Which free agent is offered a call: ring_all (every free agent at once), linear (by membership position), round_robin, random, weighted_random (by membership weight), least_recent (longest since the last call), fewest_calls, least_talk_time; agents of a lower penalty tier always come first';
COMMENT ON COLUMN acd_queue.ring_timeout_seconds IS 'How long an agent''s phone rings before the offer counts as not answered, 1..600';
COMMENT ON COLUMN acd_queue.retry_seconds IS 'An agent who let a call ring out is not offered another one for this long (the call moves on to the next agent), 0..600';
COMMENT ON COLUMN acd_queue.max_wait_seconds IS 'After this wait (1..86400) the caller goes to overflow; NULL: callers wait until answered or they hang up';
COMMENT ON COLUMN acd_queue.overflow IS 'Where a caller goes after max_wait_seconds: queue:<queue_id> (keeping the time already waited), a number (digits, * and #, optional leading +) or a sip:/sips: URI; NULL: the caller hears goodbye and is hung up on';
COMMENT ON COLUMN acd_queue.wrap_up_seconds IS 'After a queue call the agent gets no offer for this long (after-call work), 0..3600';
COMMENT ON COLUMN acd_queue.max_no_answers IS 'An agent who lets this many offers in a row ring out is paused (reason "no answer"); 0: never, at most 100';
COMMENT ON COLUMN acd_queue.music_class IS 'Asterisk music-on-hold class waiting callers hear (musiconhold.conf)';
COMMENT ON COLUMN acd_queue.announce_seconds IS 'Tell waiting callers their position this often: 0 (never) or 10..3600';
COMMENT ON COLUMN acd_queue.callback_enabled IS 'Waiting callers may press callback_key to hang up and be called back, keeping their place';
COMMENT ON COLUMN acd_queue.callback_key IS 'The DTMF key (one of 0-9, * or #) that asks for a callback';
COMMENT ON COLUMN acd_queue.callback_order IS 'A callback''s turn: agent_first rings the agent and then dials the caller, caller_first dials the caller and offers the answered call to an agent';
COMMENT ON COLUMN acd_queue.service_level_seconds IS 'KPI: calls answered within this many seconds count as within service level, 1..3600';
COMMENT ON COLUMN acd_queue.abandon_short_seconds IS 'KPI: callers who hang up within this many seconds are short abandons and do not count against the queue, 0..600';
COMMENT ON COLUMN acd_queue.goodbye IS 'What a caller hears before being hung up on (no overflow), as an Asterisk media URI, e.g. sound:vm-goodbye';
COMMENT ON COLUMN acd_queue.updated_at IS 'Last change (set by trigger)';

CREATE TRIGGER acd_queue_touch BEFORE UPDATE ON acd_queue
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE acd_agent (
    agent_id             text PRIMARY KEY,
    account              text NOT NULL,
    name                 text NOT NULL DEFAULT '',
    status               text NOT NULL DEFAULT 'offline',
    status_since         timestamptz NOT NULL DEFAULT now(),
    paused_reason        text,
    last_call_ended_at   timestamptz,
    calls_taken          integer NOT NULL DEFAULT 0,
    talk_seconds         double precision NOT NULL DEFAULT 0,
    no_answers_in_a_row  integer NOT NULL DEFAULT 0,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT acd_agent_id_shape CHECK (agent_id ~ '^\S+$'),
    CONSTRAINT acd_agent_account_shape CHECK (account ~ '^[^@\s]+$'),
    -- Deferred: an import may swap the accounts of two agents (desks traded), which is a
    -- duplicate only between its two upserts.
    CONSTRAINT acd_agent_account_key UNIQUE (account) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT acd_agent_status_known
        CHECK (status IN ('offline', 'free', 'ringing', 'busy', 'wrap_up', 'paused')),
    CONSTRAINT acd_agent_calls_taken_not_negative CHECK (calls_taken >= 0),
    CONSTRAINT acd_agent_talk_seconds_not_negative CHECK (talk_seconds >= 0),
    CONSTRAINT acd_agent_no_answers_not_negative CHECK (no_answers_in_a_row >= 0)
);

COMMENT ON TABLE acd_agent IS 'ACD agents: the SIP account their queue calls ring, and their live status and counters. softswitch acd import writes agent_id, account and name only; the other columns are the ACD app''s (kept here so a restart keeps them)';
COMMENT ON COLUMN acd_agent.agent_id IS 'Our key of the agent (no spaces), e.g. ivanova; cdr.agent names it';
COMMENT ON COLUMN acd_agent.account IS 'SIP account (user part, without @domain) whose phone queue calls ring; one agent per account';
COMMENT ON COLUMN acd_agent.name IS 'Agent name for people (wallboards, reports); may be empty';
COMMENT ON COLUMN acd_agent.status IS 'Written by the ACD app: offline, free, ringing (offered a call), busy (on a call), wrap_up (after-call work), paused';
COMMENT ON COLUMN acd_agent.status_since IS 'Written by the ACD app: when the agent entered the status';
COMMENT ON COLUMN acd_agent.paused_reason IS 'Written by the ACD app: why the agent is paused (the agent''s or a supervisor''s reason, or "no answer" for max_no_answers); NULL when not paused';
COMMENT ON COLUMN acd_agent.last_call_ended_at IS 'Written by the ACD app: end of the agent''s last queue call (least_recent offers to the longest-idle agent first); NULL: none yet';
COMMENT ON COLUMN acd_agent.calls_taken IS 'Written by the ACD app: queue calls answered (fewest_calls reads it)';
COMMENT ON COLUMN acd_agent.talk_seconds IS 'Written by the ACD app: total talk time of queue calls (least_talk_time reads it)';
COMMENT ON COLUMN acd_agent.no_answers_in_a_row IS 'Written by the ACD app: offers in a row that rang out; at the queue''s max_no_answers the agent is paused';
COMMENT ON COLUMN acd_agent.updated_at IS 'Last change of account or name (set by trigger); status changes show in status_since';

-- Only account and name: the app writes the status columns on every offer, and they are
-- no change of the agent's settings.
CREATE TRIGGER acd_agent_touch BEFORE UPDATE OF account, name ON acd_agent
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE acd_membership (
    agent_id  text NOT NULL
        CONSTRAINT acd_membership_agent_fkey REFERENCES acd_agent ON DELETE CASCADE,
    queue_id  text NOT NULL
        CONSTRAINT acd_membership_queue_fkey REFERENCES acd_queue ON DELETE CASCADE,
    penalty   integer NOT NULL DEFAULT 0,
    weight    integer NOT NULL DEFAULT 1,
    position  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (agent_id, queue_id),
    CONSTRAINT acd_membership_penalty_range CHECK (penalty BETWEEN 0 AND 100),
    CONSTRAINT acd_membership_weight_range CHECK (weight BETWEEN 1 AND 1000),
    CONSTRAINT acd_membership_position_not_negative CHECK (position >= 0)
);
CREATE INDEX acd_membership_queue_idx ON acd_membership (queue_id);

COMMENT ON TABLE acd_membership IS 'Which agents serve which queue, and how they are chosen in it';
COMMENT ON COLUMN acd_membership.agent_id IS 'The agent (deleting the agent deletes its memberships)';
COMMENT ON COLUMN acd_membership.queue_id IS 'The queue (deleting the queue deletes its memberships)';
COMMENT ON COLUMN acd_membership.penalty IS 'Tier, 0..100: a call is offered to agents of the lowest tier that has a free agent';
COMMENT ON COLUMN acd_membership.weight IS 'Share of offers under weighted_random, 1..1000 (an agent of weight 2 gets about twice as many as one of weight 1)';
COMMENT ON COLUMN acd_membership.position IS 'Order under linear, >= 0: the lowest position is offered first';

CREATE TABLE acd_callback (
    callback_id    text PRIMARY KEY,
    queue_id       text NOT NULL
        CONSTRAINT acd_callback_queue_fkey REFERENCES acd_queue ON DELETE CASCADE,
    number         text NOT NULL,
    waiting_since  timestamptz NOT NULL,
    requested_at   timestamptz NOT NULL DEFAULT now(),
    priority       integer NOT NULL DEFAULT 0,
    attempts       integer NOT NULL DEFAULT 0,
    state          text NOT NULL DEFAULT 'waiting',
    finished_at    timestamptz,
    CONSTRAINT acd_callback_number_dialable CHECK (number ~ '^\+?[0-9]{2,32}$'),
    CONSTRAINT acd_callback_attempts_not_negative CHECK (attempts >= 0),
    CONSTRAINT acd_callback_state_known
        CHECK (state IN ('waiting', 'done', 'failed', 'cancelled')),
    CONSTRAINT acd_callback_finished_when_not_waiting
        CHECK ((state = 'waiting') = (finished_at IS NULL))
);
-- The app loads the waiting requests at start, in their callers' order.
CREATE INDEX acd_callback_waiting_idx ON acd_callback (waiting_since) WHERE state = 'waiting';

COMMENT ON TABLE acd_callback IS 'Callers who pressed the callback key: the ACD calls them back in the place they had in the queue. Kept here so a restart of the ACD loses none; finished requests stay as history';
COMMENT ON COLUMN acd_callback.callback_id IS 'The ACD''s id of the request';
COMMENT ON COLUMN acd_callback.queue_id IS 'Queue the caller waited in (deleting the queue deletes its requests, waiting ones included)';
COMMENT ON COLUMN acd_callback.number IS 'Number to call back: 2 to 32 digits, optional leading +';
COMMENT ON COLUMN acd_callback.waiting_since IS 'When the caller first joined a queue: the request keeps that place';
COMMENT ON COLUMN acd_callback.requested_at IS 'When the caller pressed the callback key';
COMMENT ON COLUMN acd_callback.priority IS 'The caller''s priority in the queue (higher first)';
COMMENT ON COLUMN acd_callback.attempts IS 'Callbacks that did not reach the caller so far';
COMMENT ON COLUMN acd_callback.state IS 'waiting (still to be called back), done (reached an agent), failed (attempts ran out), cancelled (by a supervisor, or the caller called again)';
COMMENT ON COLUMN acd_callback.finished_at IS 'When the request left waiting; NULL exactly while waiting';

CREATE FUNCTION acd_notify_config_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('acd_config_changed', '');
    RETURN NULL;
END$$;
COMMENT ON FUNCTION acd_notify_config_changed() IS 'Statement trigger: NOTIFY acd_config_changed, so the ACD app reloads queues, agents and memberships';

CREATE TRIGGER acd_config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON acd_queue
    FOR EACH STATEMENT EXECUTE FUNCTION acd_notify_config_changed();
CREATE TRIGGER acd_config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON acd_membership
    FOR EACH STATEMENT EXECUTE FUNCTION acd_notify_config_changed();
-- Not on the status columns: the app writes them itself, all the time, and would only be
-- told to reload what it just wrote.
CREATE TRIGGER acd_config_changed
    AFTER INSERT OR UPDATE OF account, name OR DELETE OR TRUNCATE ON acd_agent
    FOR EACH STATEMENT EXECUTE FUNCTION acd_notify_config_changed();

-- The ACD shows an agent the caller's last calls (caller_history in acd/store.py) on every
-- queue call; without this index that is a scan of all CDRs.
CREATE INDEX cdr_caller_started_at_idx ON cdr (caller, started_at DESC NULLS LAST);

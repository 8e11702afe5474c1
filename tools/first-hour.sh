#!/usr/bin/env bash
# Writes tools/FIRST_HOUR.md: the commands an operator runs in the first
# hour, each with the output of a real run. Run from the repository root
# after `cargo build --release -p mamba-tools`; it starts its own broker on
# 127.0.0.1:9400 in a temporary directory and stops it at the end.
set -euo pipefail
root=$(pwd)
bin="$root/target/release"
out="$root/tools/FIRST_HOUR.md"
work=$(mktemp -d /tmp/mamba-first-hour-XXXX)
broker=""
cleanup() {
    if [ -n "$broker" ]; then kill "$broker" 2>/dev/null || true; wait "$broker" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
export PATH="$bin:$PATH"
unset MAMBA_BROKERS

# Runs each command as typed and pastes what it printed (stdout and stderr).
show() {
    echo '```console'
    for command in "$@"; do
        echo "\$ $command"
        timeout 30 bash -c "$command" 2>&1 | sed "s|$work|/home/you|g" || true
    done
    echo '```'
    echo
}
start() { mamba serve >>serve.log 2>&1 & broker=$!; sleep 1; }
stop() { kill -TERM "$broker"; wait "$broker" || true; broker=""; }

{
cat <<'TEXT'
# The first hour

What an operator types on the first day, with what a real run printed
(regenerate with `tools/first-hour.sh`). Every client command takes
`-b/--brokers HOST[:PORT]` (or `MAMBA_BROKERS`; the port defaults to 9400)
and `-o/--output text|json`.

## Start a broker and look at it

`mamba serve` with no flags keeps its data in `./mamba-data` and listens on
127.0.0.1:9400; every setting is also a `MAMBA_*` variable and a config-file
key (README's table).

TEXT
start
echo '```console'; echo '$ mamba serve'; sed 's/^[0-9TZ:.-]* *//' serve.log; echo '```'; echo
show "mamba health" "mamba broker info"
cat <<'TEXT'
## Topics

Sizes and durations take units. Creating twice is an error unless you say
`--if-not-exists`, which scripts that run again want.

TEXT
show "mamba topic create orders -p 4 --retention-ms 7d" \
     "mamba topic create orders --if-not-exists" \
     "mamba topic create orders"
cat <<'TEXT'
## Produce

One record per line, sent as lines arrive; `-o json` prints each
acknowledgement as it comes. Records are bytes (`--delimiter` picks the
separator); `--format json` reads keys, values, headers and partitions from
JSON lines, `--format '%k:%v\n'` from a template, `--value-file` from files.

TEXT
show "printf 'alice:hello\nbob:world\nalice:again\n' | mamba produce orders --key-separator : -o json" \
     "seq 1 100000 | mamba produce orders" \
     "echo '{\"key\":\"carol\",\"value\":\"hi\",\"headers\":{\"src\":\"web\"}}' | mamba produce orders --format json"
cat <<'TEXT'
## What is in a topic

TEXT
show "mamba topic list" "mamba topic describe orders" "mamba topic offsets orders"
cat <<'TEXT'
## Consume

`--from` takes `earliest`, `latest`, an offset, `-N` (N before the end),
`+N` (N after the start) and times (`@2026-11-30T12:00:00Z`, `@-10m`);
`-f` takes a template (`%t %p %o %k %v %h %T`). Without `--count` it
follows the log until interrupted.

TEXT
show "mamba consume orders -p 1 --from earliest --count 3 -f '%p %o %k=%v %h\n'" \
     "mamba consume orders -p 1 --from -1 --count 1 -o json" \
     "mamba consume orders -p 0 --from +2 --count 1" \
     "mamba consume orders --from @-10m --count 2 -f '%p %o %T %v\n'" \
     "mamba consume orders -p 0 --from 999999999" \
     "mamba consume orders --from yesterday"
cat <<'TEXT'
## Change a topic

Settings change at once; partitions can be added, never removed. Keyed
records sent after the change may land in other partitions, as in Kafka.

TEXT
show "mamba topic alter orders --set retention.ms=12h --set segment.bytes=256MiB" \
     "mamba topic alter orders --set partitions=2" \
     "mamba topic alter orders --set partitions=6"
cat <<'TEXT'
## Errors for scripts

With `-o json` an error is one JSON object on standard error and the exit
status is not 0 (2 for a usage error).

TEXT
show "mamba topic describe nope -o json; echo \"exit \$?\""
cat <<'TEXT'
## A consumer rides through a broker restart

TEXT
timeout 8 mamba consume orders -p 1 --from -1 -f '%o %v\n' >follow.out 2>&1 &
follower=$!
sleep 1
stop
start
echo '{"value":"after the restart","partition":1}' | mamba produce orders -f json
sleep 1
kill "$follower" 2>/dev/null || true
wait "$follower" 2>/dev/null || true
echo '```console'
echo "\$ mamba consume orders -p 1 --from -1 -f '%o %v\\n'    # meanwhile: the broker restarts, one record is sent"
cat follow.out
echo '```'
echo
cat <<'TEXT'
## Offline: check and read the files

With the broker stopped, `mamba log check` verifies every batch (exit 1 on
damage) and `mamba log dump` prints them; output into `| head` ends quietly.

TEXT
stop
show "mamba log check ./mamba-data" "mamba log dump ./mamba-data/topics/orders/1 | head -2"
cat <<'TEXT'
## Shell completion and the manual

```console
$ mamba completions bash | sudo tee /etc/bash_completion.d/mamba >/dev/null
$ mamba man | man -l -
```
TEXT
} >"$out"
echo "wrote $out"

#!/bin/sh
# Host keys made at start (each container has its own), the bench key authorised for root, then sshd alone
# in the foreground with the node image's sshd_config (defaults, including MaxStartups 10:30:100).
set -e
for t in ed25519 ecdsa; do
	f=/etc/ssh/ssh_host_${t}_key
	[ -s "$f" ] || ssh-keygen -q -N "" -t "$t" -f "$f"
done
install -d -m 0700 /root/.ssh
printf '%s\n' "$BENCH_AUTHORIZED_KEY" >/root/.ssh/authorized_keys
chmod 0600 /root/.ssh/authorized_keys
mkdir -p /run/sshd
exec /usr/sbin/sshd -D -e

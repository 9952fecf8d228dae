#!/bin/sh
# The secrets deploy/compose.yaml mounts, made once: a master key, a PostgreSQL password, and the database URL
# that holds it (hexadecimal, so the URL needs no escaping).
#   sh deploy/secrets.sh deploy/secrets
# The directory is the operator's alone (0700); the files are readable inside it (0644) because compose mounts
# them as they are and the containers read them as their own users (gesso's uid 10001, postgres's).
set -eu
dir=${1:?usage: sh deploy/secrets.sh DIR}
for name in master_key postgres_password database_url; do
  if [ -e "$dir/$name" ]; then echo "$dir/$name exists: left as it is" >&2; exit 1; fi
done
# 24 random bytes in hexadecimal, from the kernel with od (POSIX, in busybox too): python3 is not needed
token() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
# both made and checked before anything is written, the directory included: a failure leaves nothing behind,
# never a master key of "sk-" alone
key=$(token) && password=$(token)
if [ ${#key} -ne 48 ] || [ ${#password} -ne 48 ]; then echo "could not read 24 random bytes from /dev/urandom" >&2; exit 1; fi
mkdir -p "$dir" && chmod 0700 "$dir"
printf 'sk-%s' "$key" >"$dir/master_key"
printf '%s' "$password" >"$dir/postgres_password"
printf 'postgresql://gesso:%s@postgres:5432/gesso' "$password" >"$dir/database_url"
chmod 0644 "$dir/master_key" "$dir/postgres_password" "$dir/database_url"
echo "wrote $dir/master_key, $dir/postgres_password and $dir/database_url"

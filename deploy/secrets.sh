#!/bin/sh
# The secrets deploy/compose.yaml mounts, made once: a master key, a PostgreSQL password, and the database URL
# that holds it (hexadecimal, so the URL needs no escaping).
#   sh deploy/secrets.sh deploy/secrets
# The directory is the operator's alone (0700); the files are readable inside it (0644) because compose mounts
# them as they are and the containers read them as their own users (gesso's uid 10001, postgres's).
set -eu
dir=${1:?usage: sh deploy/secrets.sh DIR}
mkdir -p "$dir" && chmod 0700 "$dir"
for name in master_key postgres_password database_url; do
  if [ -e "$dir/$name" ]; then echo "$dir/$name exists: left as it is" >&2; exit 1; fi
done
token() { python3 -c "import secrets; print(secrets.token_hex($1))"; }
printf 'sk-%s' "$(token 24)" >"$dir/master_key"
password=$(token 24)
printf '%s' "$password" >"$dir/postgres_password"
printf 'postgresql://gesso:%s@postgres:5432/gesso' "$password" >"$dir/database_url"
chmod 0644 "$dir/master_key" "$dir/postgres_password" "$dir/database_url"
echo "wrote $dir/master_key, $dir/postgres_password and $dir/database_url"

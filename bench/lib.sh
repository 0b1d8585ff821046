# Shared helpers for the benchmark scripts: temp dirs, an nginx origin, process cleanup by pid.
# Source it; call df_cleanup from an EXIT trap.

DF_PIDS=()
DF_TMP=""

df_tmpdir() {
  DF_TMP=$(mktemp -d /tmp/dfbench.XXXXXX)
}

df_cleanup() {
  for pid in "${DF_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${DF_PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  [ -n "$DF_TMP" ] && rm -rf "$DF_TMP"
}

df_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# df_nginx ROOT PORT: starts nginx (sendfile on) serving ROOT on 127.0.0.1:PORT.
df_nginx() {
  local root=$1 port=$2 dir="$DF_TMP/nginx"
  mkdir -p "$dir"
  local user_line=""
  [ "$(id -u)" = 0 ] && user_line="user root;"
  cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
$user_line
events { worker_connections 1024; }
http {
  log_format bytes '\$status \$body_bytes_sent';
  access_log $dir/access.log bytes;
  sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path $dir/body; proxy_temp_path $dir/proxy; fastcgi_temp_path $dir/fcgi;
  uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
  server { listen 127.0.0.1:$port; root $root; }
}
CONF
  nginx -c "$dir/nginx.conf" -p "$dir" -g 'daemon off;' 2>"$dir/stderr.log" &
  DF_PIDS+=($!)
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && return 0
    sleep 0.05
  done
  echo "nginx did not start: $(cat "$dir/stderr.log")" >&2
  return 1
}

# df_nginx_bytes: body bytes nginx served so far.
df_nginx_bytes() {
  awk '{s+=$2} END {print s+0}' "$DF_TMP/nginx/access.log" 2>/dev/null || echo 0
}

# df_now: seconds since the epoch with nanoseconds.
df_now() { date +%s.%N; }

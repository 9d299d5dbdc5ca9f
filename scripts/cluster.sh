#!/usr/bin/env bash
# A local single-node Kubernetes cluster for FoodLab, from the Kubernetes project's own
# components built here from the Go module proxy: the control plane on 127.0.0.1, the node
# (containerd, kubelet, kube-proxy, CoreDNS) on a bridge of its own. docs/kubernetes.md.
#
#   scripts/cluster.sh build   build etcd, kube-apiserver, kube-controller-manager,
#                              kube-scheduler, kubelet, kube-proxy, CoreDNS and a pause once into
#                              the cache (keyed by version), reuse after
#   scripts/cluster.sh up      build if missing, make the certificates and keys, start etcd,
#                              kube-apiserver, kube-controller-manager, kube-scheduler; wait for /readyz
#   scripts/cluster.sh node-up (after up) the node: containerd + runc, a bridge CNI, the
#                              kubelet, kube-proxy, CoreDNS, a StorageClass with volumes, a
#                              local pause image; waits for the node to be Ready
#   scripts/cluster.sh reclaim the pool's volumes released by their claims wiped and offered
#                              again (e2e runs it before each install)
#   scripts/cluster.sh down    stop each component by its pid file (the node's pods first),
#                              remove the routes, the bridge, the mounts and cgroups it made
#   scripts/cluster.sh status  each component running or not, and how often its supervisor
#                              started it again; exit 0 if the API server answers /readyz
#
# Writes .foodlab/cluster/kubeconfig (cluster-admin); logs under .foodlab/cluster/logs/.
# Settings (environment): FOODLAB_CLUSTER_DIR (.foodlab/cluster in the repo),
# FOODLAB_CACHE_DIR (~/.cache/foodlab), CLUSTER_APISERVER_PORT (6443), CLUSTER_ETCD_PORT (2379),
# CLUSTER_ETCD_PEER_PORT (2380), CLUSTER_CONTROLLER_MANAGER_PORT (10257),
# CLUSTER_SCHEDULER_PORT (10259), CLUSTER_SERVICE_RANGE (10.96.0.0/16),
# CLUSTER_POD_RANGE (10.244.0.0/16), CLUSTER_NODE_SUBNET (10.244.0.0/24), CLUSTER_NODE_IP
# (10.244.0.1), CLUSTER_BRIDGE (foodlab0), CLUSTER_NODE_NAME (foodlab-node), CLUSTER_VOLUMES (16).
# The service and pod ranges get `unreachable` routes while the cluster is up, so no
# packet for them can leave the machine.
# Needs go (first build only), kubectl, flock, python3; installs from Debian what is missing of
# openssl, iproute2, jq, curl, and for the node containerd, runc, containernetworking-plugins,
# iptables and debootstrap.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
k8s_version=1.34.12
etcd_version=3.6.16
cache=${FOODLAB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/foodlab}
k8s_bin="$cache/kubernetes-$k8s_version/bin"
etcd_bin="$cache/etcd-$etcd_version/bin"
coredns_version=1.12.4
coredns_bin="$cache/coredns-$coredns_version/bin"
base=${FOODLAB_CLUSTER_DIR:-$repo/.foodlab/cluster}
apiserver_port=${CLUSTER_APISERVER_PORT:-6443}
etcd_port=${CLUSTER_ETCD_PORT:-2379}
etcd_peer_port=${CLUSTER_ETCD_PEER_PORT:-2380}
controller_manager_port=${CLUSTER_CONTROLLER_MANAGER_PORT:-10257}
scheduler_port=${CLUSTER_SCHEDULER_PORT:-10259}
service_range=${CLUSTER_SERVICE_RANGE:-10.96.0.0/16}
pod_range=${CLUSTER_POD_RANGE:-10.244.0.0/16}
control_plane=(kube-apiserver kube-controller-manager kube-scheduler)
node_name=${CLUSTER_NODE_NAME:-foodlab-node}
bridge=${CLUSTER_BRIDGE:-foodlab0}
# The node's pods get addresses from the first /24 of the pod range; its gateway, on the
# bridge, is the node's address (the kubelet refuses a loopback node IP).
node_subnet=${CLUSTER_NODE_SUBNET:-10.244.0.0/24}
node_ip=${CLUSTER_NODE_IP:-10.244.0.1}
pause_image=foodlab.local/pause:3.10

log() { echo "cluster: $*" >&2; }

# Go is installed under /usr/local/go on these machines, not always on PATH.
[ -x /usr/local/go/bin/go ] && PATH="$PATH:/usr/local/go/bin"

# Debian's packages the cluster needs, installed when missing (a fresh machine has none of
# the node's). Only the ones named: the node's runtime, its networking, the image base.
packages() {
  local pkg missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
control_plane_packages=(openssl iproute2 jq curl)
node_packages=(containerd runc containernetworking-plugins iptables debootstrap)

# The version the components report (kubectl version, discovery): go build alone leaves
# it at v0.0.0-master, which kubectl and helm cannot parse.
version_ldflags() {
  local pkg flags="-s -w"
  local minor=${k8s_version#*.}
  minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=v$k8s_version -X $pkg.gitMajor=${k8s_version%%.*}"
    flags+=" -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  echo "$flags"
}

# A command in the cache that is this version's (and not an unstamped or partial build).
built() {
  [ -x "$k8s_bin/$1" ] && "$k8s_bin/$1" --version 2>/dev/null | grep -qx "Kubernetes v$k8s_version"
}

# Builds each of the given commands of k8s.io/kubernetes that is not in the cache yet.
build_kubernetes() {
  local cmd missing=()
  for cmd in "$@"; do
    built "$cmd" || missing+=("$cmd")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  mkdir -p "$cache"
  exec 8>"$cache/kubernetes-$k8s_version.lock"
  flock 8
  mkdir -p "$k8s_bin"
  for cmd in "${missing[@]}"; do
    built "$cmd" && continue
    log "building $cmd $k8s_version into $k8s_bin (once)"
    local started=$SECONDS
    (cd "$repo/scripts/cluster/kubernetes" &&
      GOTOOLCHAIN=local GOFLAGS=-mod=mod nice -n 10 go build -trimpath -ldflags="$(version_ldflags)" \
        -o "$k8s_bin/$cmd.partial" "k8s.io/kubernetes/cmd/$cmd")
    mv "$k8s_bin/$cmd.partial" "$k8s_bin/$cmd"
    log "built $cmd in $((SECONDS - started)) s"
  done
  exec 8>&-
}

build_etcd() {
  [ -x "$etcd_bin/etcd" ] && return 0
  mkdir -p "$cache"
  exec 8>"$cache/etcd-$etcd_version.lock"
  flock 8
  if [ ! -x "$etcd_bin/etcd" ]; then
    log "building etcd $etcd_version into $etcd_bin (once)"
    local started=$SECONDS
    mkdir -p "$etcd_bin"
    (cd "$repo/scripts/cluster/etcd" &&
      GOTOOLCHAIN=local GOFLAGS=-mod=mod nice -n 10 go build -trimpath -ldflags='-s -w' \
        -o "$etcd_bin/etcd.partial" .)
    mv "$etcd_bin/etcd.partial" "$etcd_bin/etcd"
    log "built etcd in $((SECONDS - started)) s"
  fi
  exec 8>&-
}

build_control_plane() {
  build_etcd
  build_kubernetes "${control_plane[@]}"
}

# Everything, the node's components too (up and node-up build only what they need).
build() {
  packages "${control_plane_packages[@]}" "${node_packages[@]}"
  build_control_plane
  build_kubernetes kubelet kube-proxy
  build_coredns
  build_pause
}

# --- certificates and keys -------------------------------------------------

pki="$base/pki"

# A key and a certificate signed by the cluster CA: NAME SUBJECT [SANS] [USAGE].
issue() {
  local name=$1 subject=$2 sans=${3:-} usage=${4:-clientAuth}
  [ -s "$pki/$name.crt" ] && return 0
  local ext="$pki/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [ -n "$sans" ] && echo "subjectAltName=$sans"
  } >"$ext"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/$name.key" -subj "$subject" \
    -out "$pki/$name.csr" 2>/dev/null
  local ca=${CA:-ca}
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" \
    -CAcreateserial -days 365 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$ext"
}

# The service range's first address is the `kubernetes` Service's ClusterIP.
first_service_ip() {
  python3 -c 'import ipaddress, sys; print(next(ipaddress.ip_network(sys.argv[1]).hosts()))' \
    "$service_range"
}

certificates() {
  mkdir -p "$pki"
  chmod 700 "$pki"
  if [ ! -s "$pki/ca.crt" ]; then
    log "making the cluster CA and certificates under $pki"
    openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -days 365 \
      -subj "/CN=foodlab-cluster-ca" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$pki/ca.crt" 2>/dev/null
  fi
  local names="DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  names+=",DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$(first_service_ip)"
  issue apiserver "/CN=kube-apiserver" "$names" serverAuth
  issue etcd-server "/CN=etcd" "DNS:localhost,IP:127.0.0.1" serverAuth,clientAuth
  issue apiserver-etcd-client "/CN=kube-apiserver-etcd-client"
  issue apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  issue admin "/O=system:masters/CN=foodlab-admin"
  issue node "/O=system:nodes/CN=system:node:$node_name"
  issue kubelet "/CN=$node_name" "DNS:$node_name,IP:$node_ip" serverAuth
  issue kube-proxy "/CN=system:kube-proxy"
  issue coredns "/CN=system:coredns"
  issue controller-manager "/CN=system:kube-controller-manager"
  issue scheduler "/CN=system:kube-scheduler"
  # The aggregation layer's front proxy has a CA of its own (requestheader authentication).
  if [ ! -s "$pki/front-proxy-ca.crt" ]; then
    openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$pki/front-proxy-ca.key" -days 365 \
      -subj "/CN=foodlab-front-proxy-ca" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$pki/front-proxy-ca.crt" 2>/dev/null
  fi
  CA=front-proxy-ca issue front-proxy-client "/CN=front-proxy-client"
  if [ ! -s "$pki/sa.key" ]; then
    openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  fi
}

# A kubeconfig for one client certificate: FILE CERT-NAME.
kubeconfig_for() {
  local file=$1 name=$2
  [ -s "$file" ] && return 0
  kubectl config --kubeconfig "$file.partial" set-cluster foodlab-local \
    --server "https://127.0.0.1:$apiserver_port" --certificate-authority "$pki/ca.crt" \
    --embed-certs >/dev/null
  kubectl config --kubeconfig "$file.partial" set-credentials "$name" \
    --client-certificate "$pki/$name.crt" --client-key "$pki/$name.key" --embed-certs >/dev/null
  kubectl config --kubeconfig "$file.partial" set-context foodlab-local \
    --cluster foodlab-local --user "$name" >/dev/null
  kubectl config --kubeconfig "$file.partial" use-context foodlab-local >/dev/null
  chmod 600 "$file.partial"
  mv "$file.partial" "$file"
}

# --- processes ---------------------------------------------------------------

# The pid of the component this script started, if that process is still it.
component_pid() {
  local name=$1 pid
  [ -f "$base/run/$name.pid" ] || return 1
  pid=$(cat "$base/run/$name.pid")
  [ -n "$pid" ] && { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -q "/$name " && echo "$pid"
}

# Starts NAME (a binary path and its arguments) in its own session, logging to logs/NAME.log.
# Whether the process started for NAME still runs. Not component_pid: right after the
# fork its command line is still the shell's, and a fast check took a starting component for
# an exited one.
component_alive() {
  local pid
  # Its supervisor starts it again while it runs.
  supervisor_pid "$1" >/dev/null && return 0
  pid=$(cat "$base/run/$1.pid" 2>/dev/null) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# Standard input into FILE, unless FILE holds that already.
write_if_changed() {
  local file=$1 new
  new=$(cat)
  [ -f "$file" ] && [ "$(cat "$file")" = "$new" ] && return 0
  printf '%s\n' "$new" >"$file"
}

# Under its supervisor (scripts/cluster/supervise.sh, in a session of its own), which starts
# it again whenever it exits: run/NAME.pid is the component's pid, run/NAME.supervisor.pid
# the supervisor's, run/NAME.restarts how often it was started again.
start_component() {
  local name=$1 binary=$2
  shift 2
  # A supervisor that runs starts its component again itself (it may be between two
  # starts): a second one would run a second component. So would a component left
  # running without one.
  if supervisor_pid "$name" >/dev/null || component_pid "$name" >/dev/null; then
    return 0
  fi
  log "starting $name"
  rm -f "$base/run/$name.pid"
  # The component must not inherit the lock (fd 9), or it would hold it for its lifetime.
  setsid "$repo/scripts/cluster/supervise.sh" "$base/run" "$name" "$binary" "$@" \
    >>"$base/logs/$name.log" 2>&1 </dev/null 9>&- 8>&- &
  echo $! >"$base/run/$name.supervisor.pid"
  for _ in $(seq 1 50); do
    [ -s "$base/run/$name.pid" ] && return 0
    sleep 0.1
  done
  log "$name: its supervisor wrote no pid"
  return 1
}

# The pid of NAME's supervisor, if it runs.
supervisor_pid() {
  local name=$1 pid
  pid=$(cat "$base/run/$name.supervisor.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null |
    grep -q "supervise.sh $base/run $name " && echo "$pid"
}

# SIGTERM to PID, up to TENTHS tenths of a second to end, then SIGKILL.
stop_pid() {
  local pid=$1 tenths=$2
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 "$tenths"); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

# The supervisor first (so nothing starts the component again), which stops the component;
# then the component by its pid, should the supervisor have gone before it.
stop_component() {
  local name=$1 pid supervisor
  if supervisor=$(supervisor_pid "$name"); then
    log "stopping the supervisor of $name (pid $supervisor)"
    stop_pid "$supervisor" 150
  fi
  rm -f "$base/run/$name.supervisor.pid"
  if pid=$(component_pid "$name"); then
    log "stopping $name (pid $pid)"
    stop_pid "$pid" 100
  fi
  rm -f "$base/run/$name.pid" "$base/run/$name.restarts"
}

# How often NAME's supervisor has started it again.
restarts() {
  cat "$base/run/$1.restarts" 2>/dev/null || echo 0
}

# Waits up to SECONDS for COMMAND to succeed while component NAME stays alive (its
# supervisor starting it again at most five times meanwhile: a kubelet, for one, exits
# while containerd's CRI service is still starting).
wait_for() {
  local name=$1 seconds=$2
  shift 2
  local deadline=$((SECONDS + seconds)) allowed=$(($(restarts "$name") + 5))
  while [ $SECONDS -lt $deadline ]; do
    "$@" >/dev/null 2>&1 && return 0
    if ! component_alive "$name" || [ "$(restarts "$name")" -gt "$allowed" ]; then
      log "$name exited; see $base/logs/$name.log"
      tail -n 20 "$base/logs/$name.log" >&2 || true
      return 1
    fi
    sleep 0.5
  done
  log "$name not ready after $seconds s; see $base/logs/$name.log"
  return 1
}

admin() { kubectl --kubeconfig "$base/kubeconfig" "$@"; }

# --- routes ------------------------------------------------------------------

# No packet for a cluster address may leave the machine: the whole service and pod
# ranges are unreachable unless a more specific route (the cluster's own bridge) exists.
add_routes() {
  local range
  for range in "$service_range" "$pod_range"; do
    ip route replace unreachable "$range"
  done
  printf '%s\n' "$service_range" "$pod_range" >"$base/run/routes"
}

remove_routes() {
  local range
  [ -f "$base/run/routes" ] || return 0
  while read -r range; do
    [ -n "$range" ] || continue
    ip route del unreachable "$range" 2>/dev/null || true
  done <"$base/run/routes"
  rm -f "$base/run/routes"
}

# Every request of a client that is not a cluster component, at Metadata level (who, what,
# the answer's code) in logs/audit.log: what the operator was allowed and refused.
audit_policy() {
  cat >"$base/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    userGroups: [system:nodes]
  - level: None
    users: [system:kube-controller-manager, system:kube-scheduler, system:apiserver]
  - level: None
    userGroups: [system:serviceaccounts:kube-system]
  - level: Metadata
EOF
}

# --- the node (stage 2) --------------------------------------------------------

node_dir="$base/node"
api_dnat=(-i "$bridge" -d "$(first_service_ip)" -p tcp --dport 443 -j DNAT
  --to-destination "127.0.0.1:$apiserver_port")
containerd_sock="$base/run/containerd.sock"

ctr_() { ctr --address "$containerd_sock" --namespace k8s.io "$@"; }

build_pause() {
  local dir="$cache/pause-1/bin"
  [ -x "$dir/pause" ] && return 0
  mkdir -p "$dir"
  (cd "$repo/scripts/cluster/pause" &&
    CGO_ENABLED=0 GOTOOLCHAIN=local go build -trimpath -ldflags='-s -w' -o "$dir/pause.partial" .)
  mv "$dir/pause.partial" "$dir/pause"
}

containerd_config() {
  mkdir -p "$node_dir/containerd" "$node_dir/cni/net.d"
  cat >"$node_dir/containerd/config.toml" <<EOF
version = 2
root = "$node_dir/containerd/root"
state = "$node_dir/containerd/state"
[grpc]
  address = "$containerd_sock"
[ttrpc]
  address = "$base/run/containerd-ttrpc.sock"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$node_dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_cdi = false
  # The machine's root has every capability but CAP_SYS_RESOURCE: no oom_score_adj below
  # containerd's own (the sandbox's -998 made runc fail: "can't get final child's PID").
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$node_dir/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node_dir/cni/net.d"
EOF
  # No masquerading: pod traffic is for the node and other pods only (the pod range's
  # unreachable route catches the rest; the default route is never used by a pod).
  cat >"$node_dir/cni/net.d/10-foodlab.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "foodlab",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$node_dir/cni/ipam",
        "ranges": [[{"subnet": "$node_subnet", "gateway": "$node_ip"}]],
        "routes": [{"dst": "$pod_range"}, {"dst": "$service_range"}]
      }
    },
    {"type": "loopback"}
  ]
}
EOF
}

# The bridge exists before the kubelet starts, as the node's address is on it.
add_bridge() {
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" type bridge
    echo "$bridge" >"$base/run/bridge"
  fi
  ip addr replace "$node_ip/${node_subnet#*/}" dev "$bridge"
  ip link set "$bridge" up
  # Pods have no default route; this also drops anything from the bridge that would be
  # forwarded anywhere but back to the bridge (a pod's packet for the outside).
  if ! iptables -C FORWARD -i "$bridge" ! -o "$bridge" -j DROP 2>/dev/null; then
    iptables -I FORWARD -i "$bridge" ! -o "$bridge" -j DROP
  fi
  # Pods reach the API server (on 127.0.0.1 only) at the `kubernetes` Service's address:
  # a DNAT from the bridge to loopback, which the kernel routes only where route_localnet
  # is set, here on the bridge alone (the setting goes with the bridge).
  echo 1 >"/proc/sys/net/ipv4/conf/$bridge/route_localnet"
  if ! iptables -t nat -C PREROUTING "${api_dnat[@]}" 2>/dev/null; then
    iptables -t nat -I PREROUTING "${api_dnat[@]}"
  fi
}

kubelet_config() {
  mkdir -p "$node_dir/kubelet"
  # Pods' DNS without the cluster's: nothing outside the pod (no host resolver is copied).
  echo "nameserver 127.0.0.1" >"$node_dir/resolv.conf"
  cat >"$node_dir/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${CLUSTER_KUBELET_HEALTHZ_PORT:-10248}
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $pki/kubelet.crt
tlsPrivateKeyFile: $pki/kubelet.key
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$containerd_sock
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: [$node_ip]
resolvConf: $node_dir/resolv.conf
podCIDR: $node_subnet
maxPods: 50
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
enableControllerAttachDetach: true
EOF
}

node_up() {
  mkdir -p "$base/logs" "$base/run" "$node_dir"
  exec 9>"$base/lock"
  flock 9
  ready >/dev/null 2>&1 || { log "the control plane is not up: run $0 up first"; exit 1; }
  packages "${node_packages[@]}"
  build_kubernetes kubelet kube-proxy
  build_pause
  certificates
  kubeconfig_for "$base/node.kubeconfig" node
  kubeconfig_for "$base/kube-proxy.kubeconfig" kube-proxy
  containerd_config
  add_bridge
  # containerd 1.6 keeps its shims' sockets in /run/containerd/s whatever its config says.
  [ -e /run/containerd ] || touch "$base/run/made-run-containerd"
  [ -e /run/netns ] || touch "$base/run/made-run-netns"
  # The network namespaces that were there before the node: down removes only the node's.
  [ -f "$base/run/netns-before" ] || ls /run/netns 2>/dev/null >"$base/run/netns-before" || true
  start_component containerd /usr/bin/containerd --config "$node_dir/containerd/config.toml"
  wait_for containerd 30 ctr_ version
  if ! ctr_ images check "name==$pause_image" 2>/dev/null | grep -q "$pause_image"; then
    local rootfs="$node_dir/pause-rootfs"
    rm -rf "$rootfs" && mkdir -p "$rootfs"
    cp "$cache/pause-1/bin/pause" "$rootfs/pause"
    python3 "$repo/scripts/cluster/oci-image.py" "$pause_image" "$rootfs" "$node_dir/pause.tar" \
      --entrypoint /pause --user 65535:65535
    ctr_ images import "$node_dir/pause.tar" >/dev/null
  fi
  kubelet_config
  touch "$base/run/node"
  # containerd answers before its CRI service is initialized, and a kubelet that finds it
  # so exits ("server is not initialized yet"): its supervisor starts it again.
  start_component kubelet "$k8s_bin/kubelet" \
    --config "$node_dir/kubelet-config.yaml" --kubeconfig "$base/node.kubeconfig" \
    --root-dir "$node_dir/kubelet" --cert-dir "$node_dir/kubelet/pki" \
    --hostname-override "$node_name" --node-ip "$node_ip"
  wait_for kubelet 120 node_ready
  # down cordons the node to drain it; a node that comes back takes pods again.
  admin uncordon "$node_name" >/dev/null
  kube_proxy_up
  dns_up
  storage_up
  log "node $node_name Ready"
}

# kube-proxy in iptables mode. It leaves the host's sysctls alone: no conntrack sizing,
# no localhost NodePorts (route_localnet), NodePorts only on the node's address.
kube_proxy_up() {
  # Written only when it changes: kube-proxy exits when its configuration file is written.
  write_if_changed "$node_dir/kube-proxy-config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $base/kube-proxy.kubeconfig}
hostnameOverride: $node_name
mode: iptables
clusterCIDR: $pod_range
healthzBindAddress: 127.0.0.1:${CLUSTER_KUBE_PROXY_HEALTHZ_PORT:-10256}
metricsBindAddress: 127.0.0.1:${CLUSTER_KUBE_PROXY_METRICS_PORT:-10249}
nodePortAddresses: [$node_ip/32]
iptables: {localhostNodePorts: false}
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  # Pods on one bridge reach each other's Services only if bridged traffic passes
  # iptables (the replies must be un-NATed); the old value is put back by down.
  local sysctl=/proc/sys/net/bridge/bridge-nf-call-iptables
  if [ -f "$sysctl" ] && [ ! -f "$base/run/bridge-nf-call-iptables" ]; then
    cat "$sysctl" >"$base/run/bridge-nf-call-iptables"
    echo 1 >"$sysctl"
  fi
  start_component kube-proxy "$k8s_bin/kube-proxy" --config "$node_dir/kube-proxy-config.yaml"
  wait_for kube-proxy 60 curl -sf "http://127.0.0.1:${CLUSTER_KUBE_PROXY_HEALTHZ_PORT:-10256}/healthz"
}

# Cluster DNS: CoreDNS as a host process on the node's address (what the kubelet gives pods
# as their nameserver), answering cluster.local from the API and nothing else.
dns_up() {
  build_coredns
  kubeconfig_for "$base/coredns.kubeconfig" coredns
  admin apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
  - apiGroups: [""]
    resources: [services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:coredns"}
EOF
  cat >"$node_dir/Corefile" <<EOF
.:53 {
    bind $node_ip
    errors
    health 127.0.0.1:${CLUSTER_DNS_HEALTH_PORT:-10254}
    ready 127.0.0.1:${CLUSTER_DNS_READY_PORT:-10253}
    cache 30
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $base/coredns.kubeconfig foodlab-local
        pods insecure
    }
}
EOF
  start_component coredns "$coredns_bin/coredns" -conf "$node_dir/Corefile"
  wait_for coredns 60 curl -sf "http://127.0.0.1:${CLUSTER_DNS_READY_PORT:-10253}/ready"
}

build_coredns() {
  [ -x "$coredns_bin/coredns" ] && return 0
  mkdir -p "$cache"
  exec 8>"$cache/coredns-$coredns_version.lock"
  flock 8
  if [ ! -x "$coredns_bin/coredns" ]; then
    log "building coredns $coredns_version into $coredns_bin (once)"
    mkdir -p "$coredns_bin"
    (cd "$repo/scripts/cluster/coredns" &&
      GOTOOLCHAIN=local GOFLAGS=-mod=mod nice -n 10 go build -trimpath -ldflags='-s -w' \
        -o "$coredns_bin/coredns.partial" .)
    mv "$coredns_bin/coredns.partial" "$coredns_bin/coredns"
  fi
  exec 8>&-
}

# The pool's volumes whose claims were deleted: wiped and offered again (Available).
reclaim_volumes() {
  local name
  for name in $(admin get pv -o jsonpath='{range .items[?(@.status.phase=="Released")]}{.metadata.name}{"\n"}{end}'); do
    case $name in foodlab-local-*) ;; *) continue ;; esac
    rm -rf "${node_dir:?}/volumes/${name#foodlab-local-}"
    mkdir -p "$node_dir/volumes/${name#foodlab-local-}"
    chmod 0777 "$node_dir/volumes/${name#foodlab-local-}"
    admin patch pv "$name" --type json -p '[{"op":"remove","path":"/spec/claimRef"}]' >/dev/null
    log "volume $name reclaimed"
  done
}

# Storage for the charts' PersistentVolumeClaims: a default StorageClass without a
# provisioner, and a pool of PersistentVolumes on the node's disk (hostPath under
# .foodlab/cluster/node/volumes, open to the services' uid). A volume released by its claim
# is wiped and offered again the next time the node comes up.
storage_up() {
  local i name dir pv=""
  admin apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: foodlab-local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
EOF
  reclaim_volumes
  for i in $(seq -w 1 "${CLUSTER_VOLUMES:-16}"); do
    dir="$node_dir/volumes/$i"
    mkdir -p "$dir"
    chmod 0777 "$dir"
    pv+="---
apiVersion: v1
kind: PersistentVolume
metadata: {name: foodlab-local-$i}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: foodlab-local
  hostPath: {path: $dir, type: Directory}
"
  done
  echo "$pv" | admin apply -f - >/dev/null
}

node_ready() {
  [ "$(admin get node "$node_name" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

# The KUBE-* chains the kubelet and kube-proxy add (no other Kubernetes runs here): rules
# in the built-in chains that jump to them first, then the chains themselves.
remove_kube_chains() {
  local cmd table rule chain
  for cmd in iptables ip6tables; do
    command -v "$cmd" >/dev/null || continue
    for table in filter nat mangle; do
      "$cmd" -t "$table" -S 2>/dev/null | grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j KUBE-' |
        while read -r rule; do
          # shellcheck disable=SC2086
          eval "$cmd -t $table ${rule/-A /-D }" 2>/dev/null || true
        done || true
      for chain in $("$cmd" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ { print $2 }'); do
        "$cmd" -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$cmd" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ { print $2 }'); do
        "$cmd" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

# Everything the node made: its pods' containers and sandboxes (through containerd, so
# their mounts and network namespaces go too), then containerd, the bridge, leftover mounts
# and the pod cgroups.
node_down() {
  local id mount dir
  if component_pid kubelet >/dev/null && ready >/dev/null 2>&1; then
    # The kubelet tears its pods down itself (containers, network, namespaces) once the
    # node is cordoned and its pods are gone from the API.
    admin cordon "$node_name" >/dev/null 2>&1 || true
    admin delete pods --all --all-namespaces --force --grace-period=0 >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do
      [ -z "$(ctr_ tasks ls -q 2>/dev/null)" ] && break
      sleep 1
    done
  fi
  stop_component kubelet
  stop_component kube-proxy
  stop_component coredns
  if [ -f "$base/run/bridge-nf-call-iptables" ]; then
    cat "$base/run/bridge-nf-call-iptables" >/proc/sys/net/bridge/bridge-nf-call-iptables
    rm -f "$base/run/bridge-nf-call-iptables"
  fi
  if component_pid containerd >/dev/null; then
    for id in $(ctr_ tasks ls -q 2>/dev/null); do
      ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    sleep 1
    for id in $(ctr_ tasks ls -q 2>/dev/null); do
      ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true
    done
    for id in $(ctr_ containers ls -q 2>/dev/null); do
      ctr_ containers delete "$id" >/dev/null 2>&1 || true
    done
  fi
  stop_component containerd
  if [ -f "$base/run/made-run-containerd" ]; then
    rm -rf /run/containerd
    rm -f "$base/run/made-run-containerd"
  fi
  # Mounts under the node's dirs (kubelet volumes, sandbox shm, snapshots), deepest first,
  # and the pods' network namespaces (containerd names them cni-<uuid>).
  for mount in $(awk -v dir="$node_dir/" 'index($2, dir) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount -l "$mount" 2>/dev/null || true
  done
  if [ -f "$base/run/netns-before" ]; then
    for mount in /run/netns/cni-*; do
      [ -e "$mount" ] || continue
      grep -qx "${mount##*/}" "$base/run/netns-before" && continue
      umount "$mount" 2>/dev/null || true
      rm -f "$mount"
    done
    rm -f "$base/run/netns-before"
  fi
  if [ -f "$base/run/made-run-netns" ]; then
    rmdir /run/netns 2>/dev/null || true
    rm -f "$base/run/made-run-netns"
  fi
  if [ -f "$base/run/node" ]; then
    remove_kube_chains
    # Under each controller on cgroup v1, at the root on v2 (cgroupfs or systemd names).
    for dir in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods /sys/fs/cgroup/kubepods.slice; do
      [ -d "$dir" ] || continue
      find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    rm -f "$base/run/node"
  fi
  while iptables -D FORWARD -i "$bridge" ! -o "$bridge" -j DROP 2>/dev/null; do :; done
  while iptables -t nat -D PREROUTING "${api_dnat[@]}" 2>/dev/null; do :; done
  if [ -f "$base/run/bridge" ]; then
    ip link del "$(cat "$base/run/bridge")" 2>/dev/null || true
    rm -f "$base/run/bridge"
  fi
}

# --- commands ----------------------------------------------------------------

ready() { admin get --raw /readyz; }

up() {
  mkdir -p "$base/logs" "$base/run" "$base/etcd"
  exec 9>"$base/lock"
  flock 9
  packages "${control_plane_packages[@]}"
  build_control_plane
  certificates
  kubeconfig_for "$base/kubeconfig" admin
  kubeconfig_for "$base/controller-manager.kubeconfig" controller-manager
  kubeconfig_for "$base/scheduler.kubeconfig" scheduler
  add_routes

  start_component etcd "$etcd_bin/etcd" \
    --name foodlab --data-dir "$base/etcd" \
    --listen-client-urls "https://127.0.0.1:$etcd_port" \
    --advertise-client-urls "https://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "foodlab=http://127.0.0.1:$etcd_peer_port" \
    --cert-file "$pki/etcd-server.crt" --key-file "$pki/etcd-server.key" \
    --client-cert-auth --trusted-ca-file "$pki/ca.crt"
  wait_for etcd 30 curl -sf --cacert "$pki/ca.crt" --cert "$pki/apiserver-etcd-client.crt" \
    --key "$pki/apiserver-etcd-client.key" "https://127.0.0.1:$etcd_port/health"

  # It advertises 127.0.0.1, which an Endpoints object may not hold: no reconciler for the
  # `kubernetes` Service's endpoints (nothing in the cluster calls the API through it yet).
  audit_policy
  start_component kube-apiserver "$k8s_bin/kube-apiserver" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$apiserver_port" \
    --etcd-servers "https://127.0.0.1:$etcd_port" --etcd-cafile "$pki/ca.crt" \
    --etcd-certfile "$pki/apiserver-etcd-client.crt" --etcd-keyfile "$pki/apiserver-etcd-client.key" \
    --client-ca-file "$pki/ca.crt" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range "$service_range" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --requestheader-client-ca-file "$pki/front-proxy-ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$pki/front-proxy-client.crt" \
    --proxy-client-key-file "$pki/front-proxy-client.key" \
    --endpoint-reconciler-type none \
    --audit-policy-file "$base/audit-policy.yaml" --audit-log-path "$base/logs/audit.log" \
    --audit-log-maxsize 100 --audit-log-maxbackup 1 \
    --allow-privileged --profiling=false
  wait_for kube-apiserver 120 ready

  start_component kube-controller-manager "$k8s_bin/kube-controller-manager" \
    --kubeconfig "$base/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$base/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$base/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$controller_manager_port" \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --use-service-account-credentials \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --service-cluster-ip-range "$service_range" --leader-elect=false --profiling=false
  start_component kube-scheduler "$k8s_bin/kube-scheduler" \
    --kubeconfig "$base/scheduler.kubeconfig" \
    --authentication-kubeconfig "$base/scheduler.kubeconfig" \
    --authorization-kubeconfig "$base/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$scheduler_port" \
    --leader-elect=false --profiling=false
  wait_for kube-controller-manager 60 curl -sfk "https://127.0.0.1:$controller_manager_port/healthz"
  wait_for kube-scheduler 60 curl -sfk "https://127.0.0.1:$scheduler_port/healthz"
  # The token controller gives each namespace's default ServiceAccount its token Secret
  # and root CA ConfigMap; once kube-root-ca.crt exists, ServiceAccounts work.
  wait_for kube-controller-manager 60 admin -n default get configmap kube-root-ca.crt
  log "ready: kubectl --kubeconfig $base/kubeconfig (API https://127.0.0.1:$apiserver_port)"
}

down() {
  [ -d "$base" ] || return 0
  mkdir -p "$base/run"
  exec 9>"$base/lock"
  flock 9
  local name
  node_down
  for name in kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_component "$name"
  done
  remove_routes
}

status() {
  [ -s "$base/kubeconfig" ] && ready >/dev/null 2>&1
}

case "${1:-}" in
  build) build ;;
  up) up ;;
  node-up) node_up ;;
  reclaim) reclaim_volumes ;;
  down) down ;;
  status)
    for name in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet \
      kube-proxy coredns; do
      if pid=$(component_pid "$name"); then
        echo "  $name: running (pid $pid), restarted $(restarts "$name") times"
      elif supervisor_pid "$name" >/dev/null; then
        echo "  $name: not running (its supervisor is starting it again)"
      fi
    done
    if status; then
      echo "cluster: up (kubeconfig $base/kubeconfig)"
    else
      echo "cluster: down"
      exit 1
    fi
    ;;
  *)
    echo "usage: $0 build|up|node-up|reclaim|down|status" >&2
    exit 2
    ;;
esac

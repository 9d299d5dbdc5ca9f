# FoodLab: `make demo` runs the labs end to end on this machine,
# `make test` runs every check CI runs.

CARGO ?= cargo
# A one-shot build (CI's fresh clone) gains nothing from incremental data but
# its disk space: several GB beside the build itself.
ifdef CI
export CARGO_INCREMENTAL ?= 0
endif
FOODLAB := ./target/debug/foodlab
SYNC_LABS := manifests/examples/sync-baseline.yaml \
             manifests/examples/sync-delay.yaml \
             manifests/examples/sync-failure.yaml \
             manifests/examples/sync-timeout.yaml

.PHONY: disk-check build demo demo-async demo-streaming demo-replay test unit-and-integration bench bench-readme fmt fmt-check lint crd \
        check-orphans cluster-e2e postgres-up postgres-down rabbitmq-up rabbitmq-down kafka-up kafka-down kafka-cluster-up kafka-cluster-down rabbitmq-cluster-up rabbitmq-cluster-down charts kind-up kind-down e2e-kind clean \
        cluster-build cluster-up cluster-down cluster-status cluster-test e2e

build:
	$(CARGO) build --workspace --bins

## demo: the sync-rest labs and the streaming part's replay lab, each on its part
## started on 127.0.0.1, with their tables (Apache Kafka's jars are fetched with
## Maven on first use, well under a minute, and reused after); then one workload
## on the three parts side by side, with its report (.foodlab/report/report.html)
demo: build kafka-up rabbitmq-up
	$(FOODLAB) run $(SYNC_LABS) manifests/examples/streaming-replay.yaml
	$(FOODLAB) compare manifests/compare/baseline.yaml --report .foodlab/report

ASYNC_LABS := manifests/examples/async-backlog-drain.yaml \
              manifests/examples/async-idempotency.yaml \
              manifests/examples/async-poison.yaml

## demo-async: the async-rabbitmq labs (backlog drain takes about two minutes)
demo-async: build rabbitmq-up
	$(FOODLAB) run $(ASYNC_LABS)

STREAMING_LABS := manifests/examples/streaming-burst.yaml \
                  manifests/examples/streaming-lag.yaml \
                  manifests/examples/streaming-replay.yaml

## demo-streaming: the streaming-kafka labs (burst, consumer lag, replay) on Apache
## Kafka (scripts/kafka.sh)
demo-streaming: build kafka-up
	$(FOODLAB) run $(STREAMING_LABS)

## demo-replay: only the replay lab of the streaming part
demo-replay: build kafka-up
	$(FOODLAB) run manifests/examples/streaming-replay.yaml

## test: formatting, lints, every unit, integration and lab test (with a real
## PostgreSQL, RabbitMQ and Apache Kafka, installed and started here, stopped after; the
## three-node Kafka of crates/lab/tests/kafka_cluster.rs and the three-node RabbitMQ of
## crates/lab/tests/rabbitmq_cluster.rs are started by their tests and stopped by them,
## and again after the tests in case one was killed), then the
## local Kubernetes cluster: the operator against the real API server (cluster-test)
## and every example lab through helm install and kubectl apply (e2e); no orphans left
test: disk-check fmt-check lint build charts
	scripts/install-chromium.sh
	scripts/postgres.sh up
	scripts/rabbitmq.sh start || { scripts/postgres.sh down; exit 1; }
	scripts/kafka.sh start || { scripts/rabbitmq.sh stop; scripts/kafka.sh stop; scripts/postgres.sh down; exit 1; }
	$(MAKE) unit-and-integration; status=$$?; scripts/rabbitmq.sh stop; scripts/kafka.sh stop; \
		KAFKA_NODES=3 scripts/kafka.sh stop; RABBITMQ_NODES=3 scripts/rabbitmq.sh stop; \
		scripts/postgres.sh down; exit $$status
	$(MAKE) cluster-e2e
	$(MAKE) check-orphans

## disk-check: the build, the brokers and the cluster's images need room; a linker
## that runs out of it dies with a bus error, so say so first
disk-check:
	scripts/check-disk.sh

## cluster-e2e: the local cluster up (built once), cluster-test, e2e, the cluster down
## whatever happened
cluster-e2e:
	scripts/cluster.sh up && scripts/cluster.sh node-up || { scripts/cluster.sh down; exit 1; }
	scripts/cluster-test.sh && scripts/e2e.sh; status=$$?; scripts/cluster.sh down; exit $$status

## charts: helm lint --strict and kubernetes-validate of every chart (installs helm and
## the validator under .tools/ when missing), CRD copy and values schemas up to date
charts:
	scripts/check-charts.sh

## cluster-up / cluster-down: a local single-node Kubernetes cluster (etcd, kube-apiserver,
## kube-controller-manager, kube-scheduler on 127.0.0.1; containerd, kubelet, kube-proxy and
## DNS on its own bridge), kubeconfig .foodlab/cluster/kubeconfig; the components are built
## once from the Go module proxy (see docs/kubernetes.md)
cluster-build:
	scripts/cluster.sh build

cluster-up:
	scripts/cluster.sh up
	scripts/cluster.sh node-up

## cluster-status: what runs of the local cluster, and how often each component restarted
cluster-status:
	scripts/cluster.sh status

cluster-down:
	scripts/cluster.sh down

## cluster-test: FoodLab on that cluster: CRD, RBAC, the sync-rest labs, chaos restores
## (brings the cluster up if it is down, and stops it again after)
cluster-test:
	scripts/cluster-test.sh

## e2e: against KUBECONFIG (default: the local cluster's), the operator and every part
## installed with helm, every example lab to Pass, then the guarantees (admin token,
## restores on lab deletion and operator kill, reverse order); evidence in .foodlab/e2e/ on failure
e2e:
	scripts/e2e.sh

## On Kubernetes (needs Docker and kind): see docs/kubernetes.md
kind-up:
	scripts/kind.sh up

kind-down:
	scripts/kind.sh down

deploy-%:
	scripts/kind.sh deploy $*

lab-%:
	scripts/kind.sh lab manifests/examples/$*.yaml

e2e-kind:
	scripts/kind.sh e2e

## rabbitmq-up / rabbitmq-down: the project's RabbitMQ node on 127.0.0.1:5672 (management :15672)
rabbitmq-up:
	scripts/rabbitmq.sh start

rabbitmq-down:
	scripts/rabbitmq.sh stop

## rabbitmq-cluster-up / rabbitmq-cluster-down: three RabbitMQ nodes in one cluster on
## 127.0.0.1:5691-5693 (management :15691-15693; `RABBITMQ_NODES=3 scripts/rabbitmq.sh`)
rabbitmq-cluster-up:
	RABBITMQ_NODES=3 scripts/rabbitmq.sh start

rabbitmq-cluster-down:
	RABBITMQ_NODES=3 scripts/rabbitmq.sh stop

## postgres-up / postgres-down: the project's PostgreSQL on 127.0.0.1:55432 (`scripts/postgres.sh url`
## prints the URL to give services as --database-url / FOODLAB_DATABASE_URL)
postgres-up:
	scripts/postgres.sh up

postgres-down:
	scripts/postgres.sh down

## kafka-up / kafka-down: the project's Apache Kafka (one KRaft node) on 127.0.0.1:9092,
## topics order-events and inventory-events with 3 partitions
kafka-up:
	scripts/kafka.sh start

kafka-down:
	scripts/kafka.sh stop

## kafka-cluster-up / kafka-cluster-down: three Apache Kafka nodes on 127.0.0.1:9192-9194
## (`KAFKA_NODES=3 scripts/kafka.sh`: replication factor 3, min.insync.replicas=2)
kafka-cluster-up:
	KAFKA_NODES=3 scripts/kafka.sh start

kafka-cluster-down:
	KAFKA_NODES=3 scripts/kafka.sh stop

fmt-check:
	$(CARGO) fmt --all -- --check

unit-and-integration:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

check-orphans:
	scripts/check-no-orphans.sh

BENCH_DIR ?= .foodlab/bench

## bench: figures (not assertions) from an optimised build; every figure as
## JSON in $(BENCH_DIR), and the Markdown of README's performance tables; first
## the floor (foodlab floor: each irreducible part alone, each path's sum)
bench: rabbitmq-up kafka-up postgres-up
	$(CARGO) build --release --workspace --bins
	mkdir -p $(BENCH_DIR)
	./target/release/foodlab floor --json > $(BENCH_DIR)/floor.json
	./target/release/foodlab bench sync-rest --json > $(BENCH_DIR)/sync-rest.json
	./target/release/foodlab bench async-rabbitmq --json > $(BENCH_DIR)/async-rabbitmq.json
	./target/release/foodlab bench streaming-kafka --json > $(BENCH_DIR)/streaming-kafka.json
	./target/release/foodlab bench async-rabbitmq --broker-nodes 3 --json \
		> $(BENCH_DIR)/async-rabbitmq-3-nodes.json; status=$$?; \
		./target/release/foodlab bench streaming-kafka --broker-nodes 3 --json \
		> $(BENCH_DIR)/streaming-kafka-3-nodes.json || status=1; \
		$(MAKE) kafka-cluster-down rabbitmq-cluster-down; exit $$status
	./target/release/foodlab bench async-rabbitmq --scale 20000,200000 --json > $(BENCH_DIR)/scale.json
	./target/release/foodlab bench sync-rest --database-url "$$(scripts/postgres.sh url)" --json \
		> $(BENCH_DIR)/sync-rest-postgres.json
	./target/release/foodlab bench async-rabbitmq --database-url "$$(scripts/postgres.sh url)" --json \
		> $(BENCH_DIR)/async-rabbitmq-postgres.json
	./target/release/foodlab bench async-rabbitmq --database-url "$$(scripts/postgres.sh url)" \
		--replicas inventory=3 --json > $(BENCH_DIR)/async-rabbitmq-postgres-3.json
	./target/release/foodlab bench streaming-kafka --database-url "$$(scripts/postgres.sh url)" --json \
		> $(BENCH_DIR)/streaming-kafka-postgres.json
	python3 scripts/bench-report.py $(BENCH_DIR)/*.json > $(BENCH_DIR)/performance.md
	@echo "bench: figures in $(BENCH_DIR); README's tables: make bench-readme"

## bench-readme: README's performance tables from the last `make bench`
bench-readme:
	python3 scripts/bench-report.py --readme README.md $(BENCH_DIR)/sync-rest.json \
		$(BENCH_DIR)/async-rabbitmq.json $(BENCH_DIR)/streaming-kafka.json $(wildcard $(BENCH_DIR)/*-3-nodes.json) \
		$(wildcard $(BENCH_DIR)/floor.json) \
		$(BENCH_DIR)/scale.json \
		$(BENCH_DIR)/*-postgres*.json

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## crd: regenerate the checked-in CRD (and the operator chart's copy) from the Rust types
crd: build
	$(FOODLAB) crd > manifests/crds/foodlab.yaml
	cp manifests/crds/foodlab.yaml charts/foodlab-operator/crds/foodlab.yaml

clean:
	$(CARGO) clean
	rm -rf .foodlab

"""Prometheus metrics of ``labtf serve`` (``GET /monitoring/prometheus/metrics``).

One registry per server (not the process-global one, so that several servers in
one process, as in tests, keep their own counts):

* ``labtf_requests_total{api, endpoint, code}``: requests by front end (``rest`` |
  ``grpc``), endpoint (``predict``, ``classify``, ``status``, ``metadata``, ...) and
  answer code (HTTP status, or the gRPC status name);
* ``labtf_request_latency_seconds{api, endpoint}``: latency histogram;
* ``labtf_model_state{model, version, state}``: 1 for the model's current state
  (TF Serving's ``AVAILABLE`` once loaded);
* ``labtf_inflight_requests``: requests inside a handler.

The path is TF Serving's monitoring path; the names are labtf's own.
"""
from __future__ import annotations

#: Where TF Serving publishes Prometheus metrics.
METRICS_PATH = "/monitoring/prometheus/metrics"
#: Latency buckets (seconds): edge models answer in milliseconds to a few seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STATES = ("LOADING", "AVAILABLE", "UNLOADING", "END")


class ServingMetrics:
    """Counters, histograms and gauges of one server.

    Raises:
        LabtfError: ``prometheus-client`` is not installed.
    """

    def __init__(self, model_name: str, version: int) -> None:
        from labtf.errors import LabtfError

        try:
            import prometheus_client as pc
        except ImportError:
            raise LabtfError("labtf serve needs 'prometheus-client'; pip install "
                             "'labtf[serve]'") from None
        self._pc = pc
        self.registry = pc.CollectorRegistry()
        self.requests = pc.Counter("labtf_requests", "Requests by front end, endpoint and code",
                                   ["api", "endpoint", "code"], registry=self.registry)
        self.latency = pc.Histogram("labtf_request_latency_seconds", "Request latency",
                                    ["api", "endpoint"], buckets=BUCKETS, registry=self.registry)
        self.state = pc.Gauge("labtf_model_state", "1 for the model's current state",
                              ["model", "version", "state"], registry=self.registry)
        self.inflight = pc.Gauge("labtf_inflight_requests", "Requests inside a handler",
                                 registry=self.registry)
        self.model, self.version = model_name, str(version)
        self.set_state("LOADING")

    def set_state(self, state: str) -> None:
        """Mark the model ``state`` (one of :data:`STATES`) and clear the others."""
        for s in STATES:
            self.state.labels(self.model, self.version, s).set(1.0 if s == state else 0.0)

    def observe(self, api: str, endpoint: str, code: int | str, seconds: float) -> None:
        """Count one finished request."""
        self.requests.labels(api, endpoint, str(code)).inc()
        self.latency.labels(api, endpoint).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return self._pc.generate_latest(self.registry), self._pc.CONTENT_TYPE_LATEST

// POST /payments load for the API benchmark (driven by tests/benchmarks/bench_api.py).
// MODE=saturate: VUS closed-loop users as fast as they can; MODE=rate: RATE requests/s open-loop;
// MODE=overload: RATE requests/s open-loop past capacity, each answer sorted by status (accepted, shed, other) and
// a request unanswered after TIMEOUT (default 3s) counted as a client timeout.
// IDEMPOTENCY_KEYS=1: every request carries a fresh Idempotency-Key (as a careful client's would).
import http from "k6/http";
import { check } from "k6";
import { Counter, Trend } from "k6/metrics";
import { paymentBody } from "./payment_body.js";

const BASE = __ENV.BASE_URL;
const TOKEN = __ENV.TOKEN;
const MODE = __ENV.MODE || "saturate";
const DURATION = __ENV.DURATION || "20s";
// One payment per order and client: every run (and VU, and iteration) pays for orders of its own.
const RUN = Date.now().toString(36);

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ["count", "avg", "med", "p(90)", "p(95)", "p(99)", "max"],
  scenarios:
    MODE === "rate" || MODE === "overload"
      ? {
          rate: {
            executor: "constant-arrival-rate",
            rate: Number(__ENV.RATE),
            timeUnit: "1s",
            duration: DURATION,
            preAllocatedVUs: Number(__ENV.VUS || 50),
            maxVUs: Number(__ENV.MAX_VUS || Number(__ENV.VUS || 50) * 4),
          },
        }
      : { saturate: { executor: "constant-vus", vus: Number(__ENV.VUS || 32), duration: DURATION } },
};

const OVERLOAD = MODE === "overload";
const TIMEOUT = __ENV.TIMEOUT || "3s";
const accepted = new Trend("accepted_ms", true);
const shed = new Trend("shed_ms", true);
const other = new Counter("other_statuses");
const timeouts = new Counter("client_timeouts");
const REQUEST_TIMEOUT_ERROR = 1050;

export default function () {
  const body = paymentBody(RUN, 2 + Math.floor(Math.random() * 2));
  const headers = { "Content-Type": "application/json", Authorization: `Bearer ${TOKEN}` };
  if (__ENV.IDEMPOTENCY_KEYS === "1") headers["Idempotency-Key"] = `k6-${__VU}-${__ITER}-${Math.random()}`;
  const res = http.post(`${BASE}/payments`, body, OVERLOAD ? { headers, timeout: TIMEOUT } : { headers });
  check(res, { "202": (r) => r.status === 202 });
  if (!OVERLOAD) return;
  if (res.status === 202) accepted.add(res.timings.duration);
  else if (res.status === 503 || res.status === 429) shed.add(res.timings.duration);
  else if (res.error_code === REQUEST_TIMEOUT_ERROR) timeouts.add(1);
  else other.add(1);
}

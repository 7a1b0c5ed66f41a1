// Open-loop POST /payments for the end-to-end benchmark (driven by tests/benchmarks/bench_e2e.py).
// RATE payments/s for DURATION seconds (constant-arrival-rate: a slow answer never lowers the offered rate), each
// with SELLERS_MIN..SELLERS_MAX payment orders. Every request is logged as one line
// "<sent at, epoch ms> <status, 0 = timeout or no connection> <duration ms> <orders in the body>"
// to the --console-output file, which the benchmark buckets per second.
// Tokens: TOKEN (from Keycloak, issued at TOKEN_ISSUED_MS) to start with; each VU fetches its own from TOKEN_URL
// before that one expires, at a moment of its own so the refreshes are spread out.
import http from "k6/http";
import { paymentBody } from "./payment_body.js";

const BASE = __ENV.BASE_URL;
const RUN = __ENV.RUN_ID || Date.now().toString(36);
const SELLERS_MIN = Number(__ENV.SELLERS_MIN || 2);
const SELLERS_MAX = Number(__ENV.SELLERS_MAX || 3);
const TOKEN_LIFETIME_MS = Number(__ENV.TOKEN_LIFETIME_S || 300) * 1000;

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ["med", "p(95)", "p(99)", "max"],
  scenarios: {
    e2e: {
      executor: "constant-arrival-rate",
      rate: Number(__ENV.RATE),
      timeUnit: "1s",
      duration: `${__ENV.DURATION}s`,
      preAllocatedVUs: Number(__ENV.VUS),
      maxVUs: Number(__ENV.MAX_VUS),
    },
  },
};

let token = __ENV.TOKEN;
// Refresh somewhere between 60 % and 85 % of the lifetime, a different moment for every VU.
let refreshAt = Number(__ENV.TOKEN_ISSUED_MS) + TOKEN_LIFETIME_MS * (0.6 + 0.25 * Math.random());

function currentToken() {
  if (Date.now() < refreshAt) return token;
  const res = http.post(
    __ENV.TOKEN_URL,
    { grant_type: "client_credentials", client_id: __ENV.CLIENT_ID, client_secret: __ENV.CLIENT_SECRET },
    { responseType: "text", tags: { name: "token" } },
  );
  if (res.status === 200) {
    token = res.json("access_token");
    refreshAt = Date.now() + TOKEN_LIFETIME_MS * (0.6 + 0.25 * Math.random());
  } else {
    refreshAt = Date.now() + 1000; // keep the old token; try again in a second
  }
  return token;
}

export default function () {
  const n = SELLERS_MIN + Math.floor(Math.random() * (SELLERS_MAX - SELLERS_MIN + 1));
  const body = paymentBody(RUN, n);
  const headers = { "Content-Type": "application/json", Authorization: `Bearer ${currentToken()}` };
  const sent = Date.now();
  const res = http.post(`${BASE}/payments`, body, { headers, timeout: __ENV.TIMEOUT || "10s" });
  // A request that got no answer has no timings: its duration is the time it was given.
  const took = res.status === 0 ? Date.now() - sent : res.timings.duration;
  console.log(`${sent} ${res.status} ${took.toFixed(2)} ${n}`);
}

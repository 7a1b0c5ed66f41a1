// The one payment body both k6 scripts send: `sellers` payment orders of random amounts in EUR, for an orderId of
// this run, VU and iteration (one payment per order and client, so every request is a new payment).
function cents() {
  return 1000 + Math.floor(Math.random() * 19000);
}

export function paymentBody(run, sellers) {
  const lines = [];
  let total = 0;
  for (let i = 0; i < sellers; i++) {
    const value = cents();
    total += value;
    lines.push({ sellerId: `SELLER-${Math.floor(Math.random() * 1000)}`, amount: { value, currency: "EUR" } });
  }
  return JSON.stringify({
    buyerId: `BUYER-${__VU}`,
    orderId: `ORDER-${run}-${__VU}-${__ITER}`,
    totalAmount: { value: total, currency: "EUR" },
    paymentOrders: lines,
  });
}

// A non-Python client: calls the gateway with Node's fetch and prints one JSON line per call.
// Usage: node fetch.mjs BASE_URL CLIENT PURPOSE REST_PATH GRPC_PATH
const [base, client, purpose, restPath, grpcPath] = process.argv.slice(2);
const headers = { "X-Road-Client": client, "Ruta-Purpose": purpose };

async function call(method, path, body) {
  const response = await fetch(base + path, {
    method,
    headers: body === undefined ? headers : { ...headers, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(20000),
  });
  return {
    status: response.status,
    messageId: response.headers.get("x-road-id"),
    requestHash: response.headers.get("x-road-request-hash"),
    body: await response.json(),
  };
}

const rest = await call("GET", restPath);
const grpc = await call("POST", grpcPath, { nationalId: "38001010001" });
console.log(JSON.stringify({ rest, grpc }));

// The dashboard's only way to the server: /api/v1 with the key typed in, as a bearer token.

export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
    this.retryAfter = retryAfter;
  }

  /** The sentence the page shows for this error. */
  userMessage() {
    const detail = this.problem.detail || "";
    switch (this.status) {
      case 0:
        return "The server could not be reached. Check your connection and try again.";
      case 401:
        return "This API key was not accepted: check that it is complete and has not been revoked.";
      case 403:
        return `This API key may not do that: ${detail || "a scope is missing"}. Ask for a key with the scope named.`;
      case 429:
        return `Too many requests: the rate limit was reached. Try again in ${this.retryAfter || "a few"} seconds.`;
      default:
        return detail ? `${this.problem.title || "Error"}: ${detail}` : `The request failed (HTTP ${this.status}).`;
    }
  }
}

export class Api {
  constructor(key) {
    this.key = key;
  }

  async request(method, path, body) {
    const headers = { Authorization: `Bearer ${this.key}`, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(`/api/v1${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
        referrerPolicy: "no-referrer",
      });
    } catch {
      throw new ApiError(0, null, null);
    }
    if (response.status === 204) return null;
    let payload = null;
    try {
      payload = await response.json();
    } catch {
      payload = null;
    }
    if (!response.ok) throw new ApiError(response.status, payload, response.headers.get("Retry-After"));
    return payload;
  }

  get(path) {
    return this.request("GET", path);
  }

  query(body) {
    return this.request("POST", "/analytics/query", body);
  }
}

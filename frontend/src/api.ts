// The GraphQL client: errors are thrown with the server's message, never swallowed.
import { accessToken } from "./auth";

export class ApiError extends Error {
  constructor(message: string, public code?: string) {
    super(message);
  }
}

export async function gql<T = any>(query: string, variables: Record<string, unknown> = {}): Promise<T> {
  const token = await accessToken();
  if (!token) throw new ApiError("not signed in", "UNAUTHENTICATED");
  const resp = await fetch("/graphql", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const json = await resp.json().catch(() => null);
  if (!json) throw new ApiError(`the API answered ${resp.status} without a GraphQL body`);
  if (json.errors?.length) {
    const e = json.errors[0];
    const causes = (e.extensions?.causes || []).map((c: any) => `${c.field}: ${c.message}`).join("; ");
    throw new ApiError(causes && !e.message.includes(causes) ? `${e.message} (${causes})` : e.message, e.extensions?.code);
  }
  return json.data as T;
}

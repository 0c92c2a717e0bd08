-- wrk script: POSTs the body file named by the BODY environment variable (a GET when BODY
-- is empty), with the headers in HEADERS ("name: value;name: value").
local body = os.getenv("BODY") or ""
if body ~= "" then
  local f = assert(io.open(body, "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/json"
end
for pair in string.gmatch(os.getenv("HEADERS") or "", "[^;]+") do
  local name, value = pair:match("^%s*(.-)%s*:%s*(.-)%s*$")
  wrk.headers[name] = value
end

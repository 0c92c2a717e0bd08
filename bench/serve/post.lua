-- wrk script: POSTs the body file named by the BODY environment variable, with the
-- headers in HEADERS ("name: value;name: value"), and counts non-2xx answers.
local f = assert(io.open(os.getenv("BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
for pair in string.gmatch(os.getenv("HEADERS") or "", "[^;]+") do
  local name, value = pair:match("^%s*(.-)%s*:%s*(.-)%s*$")
  wrk.headers[name] = value
end

"""
fledger_client: a Python client for fledger, shaped like Feast's SDK.

Standard library only; when pandas is importable, training sets come back
as DataFrames and DataFrames are accepted wherever rows are.

    from fledger_client import Client

    fs = Client("http://localhost:8081", token=READER_TOKEN,
                command_url="http://localhost:8080", command_token=PRODUCER_TOKEN)

    # online, like FeatureStore.get_online_features(...).to_dict()
    fs.get_online_features(features=["user_activity:dwell_ms", "user_activity:clicks_5m"],
                           entity_rows=[{"user_id": "u1"}, {"user_id": "u2"}])
    # {"user_id": ["u1", "u2"], "dwell_ms": [1200.5, None], "clicks_5m": [3, 0]}

    # training data, like FeatureStore.get_historical_features(...).to_df()
    df = fs.get_historical_features(entity_df, features=[...], point_in_time="as_known")

    # producers (command-svc)
    fs.write("user_activity", "u1", {"dwell_ms": 1200.5})
    fs.push("user_activity", df)   # Feast's push: one event per row

Reads go to query-svc (CONTRACT §6): `POST /get-online-features` (Feast's
route) and `POST /v1/features:historical` (point-in-time joins, request
and answer streamed through a temporary file and line by line, so a large
export holds only the result in memory). Writes go to command-svc (§3).
Errors of the services raise FledgerError with their code, message and field.
"""

import datetime
import http.client
import json
import ssl
import tempfile
import urllib.parse

try:  # optional: DataFrames in and out
    import pandas as _pd
except ImportError:  # pragma: no cover - depends on the machine
    _pd = None

__all__ = ["Client", "FledgerError", "OnlineResponse"]

HISTORICAL_ROUTE = "/v1/features:historical"
EVENT_TIMESTAMP = "event_timestamp"


class FledgerError(Exception):
    """An error answer of a fledger service (CONTRACT §9), or an unusable answer."""

    def __init__(self, status, code, message, field=None, body=None):
        super().__init__(f"HTTP {status} {code}: {message}"
                         + (f" (field {field})" if field else ""))
        self.status, self.code, self.message, self.field, self.body = (
            status, code, message, field, body)


class OnlineResponse(dict):
    """Columns by name, entity column first (Feast's OnlineResponse.to_dict() shape).

    It is the dict itself; to_dict() returns a copy and to_df() a pandas
    DataFrame. statuses and event_timestamps hold Feast's per-value metadata."""

    def __init__(self, columns, statuses, event_timestamps):
        super().__init__(columns)
        self.statuses = statuses
        self.event_timestamps = event_timestamps

    def to_dict(self):
        return {name: list(values) for name, values in self.items()}

    def to_df(self):
        if _pd is None:
            raise RuntimeError("to_df() needs pandas (Debian: apt-get install python3-pandas)")
        return _pd.DataFrame(self.to_dict())


def _time_text(value):
    """RFC 3339 in UTC with microseconds, from a datetime, a pandas Timestamp or a string."""
    if isinstance(value, str):
        return value
    if _pd is not None and isinstance(value, _pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:  # naive times are UTC, as in Feast
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, datetime.date):
        return value.strftime("%Y-%m-%dT00:00:00.000000Z")
    raise TypeError(f"not a timestamp: {value!r}")


def _is_frame(obj):
    return _pd is not None and isinstance(obj, _pd.DataFrame)


def _rows_of(rows_or_df):
    """A list of dicts from a list of dicts or a DataFrame."""
    if _is_frame(rows_or_df):
        return rows_or_df.to_dict(orient="records")
    return list(rows_or_df)


def _json_value(value):
    """A value as JSON takes it (numpy scalars and timestamps included)."""
    if isinstance(value, float) and value != value:  # NaN: a missing value
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (datetime.datetime, datetime.date)) or (
            _pd is not None and isinstance(value, _pd.Timestamp)):
        return _time_text(value)
    if _pd is not None and value is _pd.NaT:
        return None
    if hasattr(value, "item"):  # numpy scalar
        return _json_value(value.item())
    return value


def _split_refs(features):
    """[("view", "name"), ...] from ["view:name", ...], views in first-seen order."""
    refs = []
    for ref in features:
        if not isinstance(ref, str) or ref.count(":") != 1 or ref.startswith(":") \
                or ref.endswith(":"):
            raise ValueError(f'a feature reference is "<view>:<name>", not {ref!r}')
        refs.append(tuple(ref.split(":")))
    return refs


class Client:
    """A fledger client: reads from query-svc, writes to command-svc.

    query_url, command_url: base URLs (http:// or https://). token: a bearer
    token with the role reader, for reads; command_token: one with the role
    producer, for write() and push() (default: token). ca_file: the PEM CA
    of https:// services (default: the system's). timeout: seconds per wait.
    """

    def __init__(self, query_url, token, command_url=None, command_token=None,
                 ca_file=None, timeout=60.0):
        self.query_url = query_url.rstrip("/")
        self.token = token
        self.command_url = command_url.rstrip("/") if command_url else None
        self.command_token = command_token or token
        self.timeout = timeout
        self._ssl = ssl.create_default_context(cafile=ca_file)
        self._views = {}

    # -- HTTP --
    def _connect(self, base_url):
        url = urllib.parse.urlsplit(base_url)
        if url.scheme == "https":
            return http.client.HTTPSConnection(url.hostname, url.port or 443,
                                               timeout=self.timeout, context=self._ssl), url.path
        if url.scheme != "http":
            raise ValueError(f"not an http:// or https:// URL: {base_url}")
        return http.client.HTTPConnection(url.hostname, url.port or 80,
                                          timeout=self.timeout), url.path

    @staticmethod
    def _raise_for(status, body):
        try:
            error = json.loads(body)["error"]
            raise FledgerError(status, error.get("code"), error.get("message"),
                               error.get("field"), body)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise FledgerError(status, "http_error", body[:300].decode("utf-8", "replace")
                               if isinstance(body, bytes) else str(body)[:300], None, body)

    def _json(self, method, base_url, path, token, obj=None):
        conn, prefix = self._connect(base_url)
        try:
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            body = None
            if obj is not None:
                body = json.dumps(obj).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, prefix + path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if resp.status not in (200, 201):
            self._raise_for(resp.status, data)
        return json.loads(data)

    def _command(self):
        if not self.command_url:
            raise ValueError("this needs command-svc: Client(..., command_url=...)")
        return self.command_url

    # -- reading online --
    def get_online_features(self, features, entity_rows, full_feature_names=False):
        """Feast's get_online_features: the latest values of features ("view:name",
        a name may be a feature or a window) for entity_rows, a list of dicts
        keyed by the views' entity column (or a DataFrame with that column).
        Returns an OnlineResponse: a dict of columns, entity column first."""
        _split_refs(features)
        rows = _rows_of(entity_rows)
        if not rows:
            raise ValueError("entity_rows is empty")
        keys = set(rows[0])
        if len(keys) != 1 or any(set(r) != keys for r in rows):
            raise ValueError("every entity row is {<entity column>: id}, the same column "
                             "in each")
        column = next(iter(keys))
        answer = self._json("POST", self.query_url, "/get-online-features", self.token, {
            "features": list(features),
            "entities": {column: [_json_value(r[column]) for r in rows]},
            "full_feature_names": bool(full_feature_names)})
        names = answer["metadata"]["feature_names"]
        results = answer["results"]
        return OnlineResponse(
            {name: r["values"] for name, r in zip(names, results)},
            {name: r.get("statuses") for name, r in zip(names, results)},
            {name: r.get("event_timestamps") for name, r in zip(names, results)})

    # -- training data --
    def _view(self, name):
        """The view's definition from command-svc (cached), or None without command_url."""
        if name not in self._views:
            if not self.command_url:
                return None
            self._views[name] = self._json(
                "GET", self.command_url, "/v1/views/" + urllib.parse.quote(name, safe=""),
                self.command_token)
        return self._views[name]

    def _historical(self, view, names, entity_ids, times, point_in_time):
        """Yields one answer object per row of the point-in-time join of one view."""
        head = {"view": view, "point_in_time": point_in_time}
        vdef = self._view(view)
        if vdef is not None:  # ask for exactly what is wanted
            windows = {w["name"] for w in vdef.get("windows", [])}
            head["features"] = [n for n in names if n not in windows]
            head["windows"] = [n for n in names if n in windows]
        # else: every feature and window the caller may read, picked below
        with tempfile.TemporaryFile() as body:
            body.write(json.dumps(head).encode() + b"\n")
            for entity_id, ts in zip(entity_ids, times):
                body.write(json.dumps({"entity_id": _json_value(entity_id),
                                       "ts": _time_text(ts)}).encode() + b"\n")
            length = body.tell()
            body.seek(0)
            conn, prefix = self._connect(self.query_url)
            try:
                conn.request("POST", prefix + HISTORICAL_ROUTE, body=body, headers={
                    "Authorization": f"Bearer {self.token}",
                    "Content-Type": "application/x-ndjson",
                    "Accept": "application/x-ndjson",
                    "Content-Length": str(length)})
                resp = conn.getresponse()
                if resp.status != 200:
                    self._raise_for(resp.status, resp.read())
                for line in resp:
                    if line.strip():
                        yield json.loads(line)
            finally:
                conn.close()

    def get_historical_features(self, entity_df, features, point_in_time="event_time",
                                full_feature_names=False, entity_column=None):
        """Feast's get_historical_features: for each row of entity_df (a DataFrame,
        or a list of dicts, with the entity column and event_timestamp), the
        features ("view:name", features or windows) as of its event_timestamp.

        point_in_time: "event_time" (every event with event_ts at or before the
        row's time) or "as_known" (only those also ingested by then: what an
        online read at that moment served). Returns entity_df with one column
        per feature appended (named view__name with full_feature_names), rows
        in entity_df's order: a DataFrame when entity_df is one (or pandas is
        installed and entity_df is a list), else a list of dicts. A row outside
        the view's retention gets None values."""
        if point_in_time not in ("event_time", "as_known"):
            raise ValueError('point_in_time is "event_time" or "as_known"')
        refs = _split_refs(features)
        rows = _rows_of(entity_df)
        frame_in = _is_frame(entity_df)
        columns = list(entity_df.columns) if frame_in else (list(rows[0]) if rows else [])
        if EVENT_TIMESTAMP not in columns:
            raise ValueError(f"entity_df needs an {EVENT_TIMESTAMP} column")
        times = [r[EVENT_TIMESTAMP] for r in rows]
        out_columns = {}
        by_view = {}
        for view, name in refs:
            by_view.setdefault(view, []).append(name)
        for view, names in by_view.items():
            column = entity_column
            if column is None:
                vdef = self._view(view)
                candidates = [c for c in columns if c != EVENT_TIMESTAMP]
                if vdef is not None:
                    column = vdef["entity"]
                elif len(candidates) == 1:
                    column = candidates[0]
                else:
                    raise ValueError(
                        f"entity_df has the columns {candidates}: say which is the entity "
                        "(entity_column=...), or give command_url to look the view up")
            if column not in columns:
                raise ValueError(f"entity_df has no column {column!r} (view {view})")
            values = {name: [] for name in names}
            n = 0
            for answer in self._historical(view, names, [r[column] for r in rows], times,
                                           point_in_time):
                n += 1
                if "error" in answer:
                    for name in names:
                        values[name].append(None)
                    continue
                feats, wins = answer.get("features", {}), answer.get("windows", {})
                for name in names:
                    obj = feats.get(name, wins.get(name))
                    if obj is None:
                        raise FledgerError(200, "not_served",
                                           f"{view}:{name} is neither a feature nor a window "
                                           "you may read")
                    values[name].append(obj.get("value"))
            if n != len(rows):
                raise FledgerError(200, "short_answer",
                                   f"{n} answer rows for {len(rows)} entity rows")
            for name in names:
                out = f"{view}__{name}" if full_feature_names else name
                if out in out_columns or out in columns:
                    raise ValueError(f"two columns would be named {out!r}: set "
                                     "full_feature_names=True")
                out_columns[out] = values[name]
        if frame_in or (_pd is not None and isinstance(entity_df, list)):
            frame = entity_df.copy() if frame_in else _pd.DataFrame(rows)
            frame = frame.reset_index(drop=True)
            for name, vals in out_columns.items():
                frame[name] = vals
            return frame
        return [dict(row, **{name: vals[i] for name, vals in out_columns.items()})
                for i, row in enumerate(rows)]

    # -- writing (command-svc) --
    def write(self, view, entity_id, features, event_ts=None, idempotency_key=None):
        """Appends one event (CONTRACT §3); returns {"seq", "leaf_hash", "duplicate",
        "tree_size"} once it is durable. Pass its seq to a read as min_seq to
        read your write."""
        event = {"view": view, "entity_id": _json_value(entity_id),
                 "features": {k: _json_value(v) for k, v in features.items()}}
        if event_ts is not None:
            event["event_ts"] = _time_text(event_ts)
        if idempotency_key is not None:
            event["idempotency_key"] = idempotency_key
        answer = self._json("POST", self._command(), "/v1/events", self.command_token, event)
        return dict(answer["results"][0], tree_size=answer["tree_size"])

    def push(self, push_source_name, df, to="online"):
        """Feast's push: one event per row of df (a DataFrame or a list of dicts)
        into the view push_source_name; columns are the view's entity column,
        event_timestamp (optional) and features. All rows or none are stored.
        Returns command-svc's answer ({"results": [...], "tree_size"})."""
        rows = _rows_of(df)
        if not rows:
            raise ValueError("nothing to push")
        names = list(df.columns) if _is_frame(df) else list(rows[0])
        columns = {name: [_json_value(r.get(name)) for r in rows] for name in names}
        return self._json("POST", self._command(), "/push", self.command_token,
                          {"push_source_name": push_source_name, "df": columns, "to": to})

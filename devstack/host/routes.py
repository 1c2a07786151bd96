"""What the Functions host checks about an HTTP function at start-up, and its route templates.

Ported from the real host and the ASP.NET Core routing it builds on (messages verbatim):

- Azure/azure-functions-host @ 89dc438d476542786f2fc4070f553423213a6223 (v4.1037.0):
  ``src/WebJobs.Script/Host/ScriptHost.cs`` (``ValidateFunction``, ``ValidateHttpFunction``,
  ``HttpRoutesConflict``), ``Host/HostFunctionMetadataProvider.cs`` and ``Utility.cs`` (function
  names, "At least one binding"), ``Description/FunctionDescriptorProvider.cs`` (bindings,
  triggers), ``Binding/WebJobsCoreScriptBindingProvider.cs`` + ``ScriptBindingContext.cs``
  (``authLevel``, ``methods``, ``route``), ``WebJobs.Script.WebHost/WebScriptHostHttpRoutesManager.cs``.
- Azure/azure-webjobs-sdk-extensions ``WebJobsRouteBuilder.cs``: template = ``prefix + '/' + route``.
- dotnet/aspnetcore ``src/Http/Routing``: ``RoutePatternParser``, ``RouteParameterParser``,
  ``RouteBase``, ``RouteConstraintBuilder``, ``ParameterPolicyActivator``, ``RouteOptions``,
  ``PathTokenizer``, ``RoutePatternMatcher``, ``Constraints/*``.

A function that fails a check is *in error* (:class:`FunctionInError`): the host logs
"The '<name>' function is in error: <message>", does not serve it, and runs the others. A route
template ASP.NET cannot build (:class:`RouteCreationError`) fails the whole host's start.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

AUTH_LEVELS = ("anonymous", "user", "function", "system", "admin")  # AuthorizationLevel, in enum order
BUILT_IN_ROUTES = "The specified route conflicts with one or more built in routes."
_FUNCTION_NAME = re.compile(r"[a-z][a-z0-9_\-]{0,127}", re.I | re.A)  # Utility.FunctionNameValidationRegex
_BINDING_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9]{0,127}|\$return")   # Utility.BindingNameValidationRegex


class FunctionInError(Exception):
    """Why the host does not load one function."""


class RouteCreationError(Exception):
    """A route template the host cannot build; the message is FlattenException's."""


@dataclass(frozen=True)
class HttpTrigger:
    route: str                       # as declared, or the function's name
    methods: tuple[str, ...] | None  # None: any method; (): no method at all
    auth_level: str                  # one of AUTH_LEVELS


def _get(binding: Any, key: str) -> Any:
    """ScriptBindingContext.GetMetadataValue: property names are case-insensitive."""
    items = binding.items() if isinstance(binding, dict) else ()
    return next((v for k, v in items if k.lower() == key.lower()), None)


def http_trigger(name: str, spec: dict[str, Any]) -> HttpTrigger | None:
    """The host's checks of one ``function.json``, in its order; None for a non-HTTP trigger."""
    if not _FUNCTION_NAME.fullmatch(name) or name.lower() == "host":
        raise FunctionInError(f"'{name}' is not a valid function name.")
    bindings = spec.get("bindings") if isinstance(spec, dict) else None
    if not isinstance(bindings, list) or not bindings:
        raise FunctionInError("At least one binding must be declared.")
    seen: set[str] = set()
    for b in bindings:
        bname = _get(b, "name")
        if not isinstance(bname, str) or not _BINDING_NAME.fullmatch(bname):
            raise FunctionInError(f"The binding name {bname or ''} is invalid. "
                                  "Please assign a valid name to the binding.")
        if not _get(b, "type"):
            raise FunctionInError(f"Binding '{bname}' is invalid. Bindings must specify a Type.")
        if bname.lower() in seen:
            raise FunctionInError(f"Multiple bindings with name '{bname}' discovered. Binding names must be unique.")
        seen.add(bname.lower())
    triggers = [b for b in bindings if str(_get(b, "type")).lower().endswith("trigger")
                and str(_get(b, "direction") or "in").lower() != "out"]
    if len(triggers) > 1:
        raise FunctionInError("Multiple trigger bindings defined. A function can only have a single trigger binding.")
    if not triggers:
        raise FunctionInError("No trigger binding specified. A function must have a trigger input binding.")
    trigger = triggers[0]
    if str(_get(trigger, "type")).lower() != "httptrigger":
        return None
    raw = _get(trigger, "authLevel")
    level = "" if raw is None else str(raw).strip().lower()
    if level.isdigit() and int(level) < len(AUTH_LEVELS):
        level = AUTH_LEVELS[int(level)]
    if level and level not in AUTH_LEVELS:
        raise FunctionInError("Error parsing function.json: Invalid value specified for binding property 'authLevel' "
                              "of enum type AuthorizationLevel.")
    methods, route = _get(trigger, "methods"), _get(trigger, "route")
    if methods is not None and not isinstance(methods, list):
        raise FunctionInError("Error parsing function.json: Invalid value specified for binding property 'methods' "
                              "of type JArray.")
    if isinstance(route, (list, dict)):
        raise FunctionInError("Error parsing function.json: Invalid value specified for binding property 'route' "
                              "of type String.")
    route = name if route is None or not str(route).strip() else str(route)
    if route.strip("/").lower().startswith(("admin", "runtime")):  # ValidateHttpFunction
        raise FunctionInError(BUILT_IN_ROUTES)
    return HttpTrigger(route, None if methods is None else tuple(str(m) for m in methods), level or "function")


def check_conflicts(trigger: HttpTrigger, loaded: dict[str, HttpTrigger]) -> None:
    """HttpRoutesConflict: the same route text (ignoring case and outer '/') and a method in common;
    no methods means all methods. Methods compare case-sensitively (LINQ ``Intersect``)."""
    for other_name, other in loaded.items():
        if trigger.route.strip("/").lower() != other.route.strip("/").lower():
            continue
        if not trigger.methods or not other.methods or set(trigger.methods) & set(other.methods):
            raise FunctionInError(f"The route specified conflicts with the route defined by function '{other_name}'.")


# --- ASP.NET Core route templates -----------------------------------------------------------------
_MISMATCHED = ("There is an incomplete parameter in the route template. "
               "Check that each '{' character has a matching '}' character.")
_INVALID_NAME = ("The route parameter name '{}' is invalid. Route parameter names must be non-empty and cannot "
                 "contain these characters: '{{', '}}', '/'. The '?' character marks a parameter as optional, and can "
                 "occur only at the end of the parameter. The '*' character marks a parameter as catch-all, and can "
                 "occur only at the start of the parameter.")


class _TemplateError(Exception):
    """RoutePatternParser's error (an ArgumentException for parameter 'routeTemplate')."""


class _ConstraintError(Exception):
    """An inline constraint the resolver cannot build."""


@dataclass
class _Param:
    name: str
    catch_all: bool
    optional: bool
    default: str | None
    constraints: list[str]


Part = str | _Param  # a literal or a parameter


def _parse_parameter(text: str) -> _Param:
    """RouteParameterParser.ParseRouteParameter: ``*name:c1:c2(arg)=default`` / ``name?``."""
    if not text:
        return _Param("", False, False, None, [])
    start, end = (2 if text.startswith("**") else 1 if text.startswith("*") else 0), len(text) - 1
    optional = text[end] == "?"
    end -= optional
    stop = next((j for j in range(start + 1, end + 1) if text[j] in ":="), end + 1)  # the name's end
    name, i = text[start:stop], stop - 1 if stop <= end else stop
    constraints, state, mark = [], "start", i
    while state != "end":  # ParseConstraints
        c = text[i] if i <= end else None
        if state == "start":
            if c is None:
                state = "end"
            elif c == ":":
                state, mark = "name", i + 1
            elif c == "(":
                state = "paren"
            elif c == "=":
                state, i = "end", i - 1
        elif state == "paren":
            if c is None:
                state = "end"
                constraints.append(text[mark:i])
            elif c == ")":
                after = text[i + 1] if i + 1 <= end else None
                if after in (None, ":", "="):
                    constraints.append(text[mark:i + 1])
                    state, mark = ("start", i + 1) if after == ":" else ("end", mark)
            elif c in ":=":
                close = text.find(")", i + 1)
                if close == -1:
                    constraints.append(text[mark:i])
                    state, mark, i = ("name", i + 1, i) if c == ":" else ("end", mark, i - 1)
                else:
                    i = close
        else:  # parsing a constraint's name
            if c in (None, ":", "="):
                if text[mark:i]:
                    constraints.append(text[mark:i])
                if c is None:
                    state = "end"
                elif c == ":":
                    mark = i + 1
                else:
                    state, i = "end", i - 1
            elif c == "(":
                state = "paren"
        i += 1
    default = text[i + 1:end + 1] if i <= end and text[i] == "=" else None
    return _Param(name, text.startswith("*") and not optional, optional, default, constraints)


def _parse_template(template: str) -> list[list[Part]]:
    """RoutePatternParser.Parse: a list of segments, each a list of literal/parameter parts."""
    t = template[2:] if template.startswith("~/") else template.removeprefix("/")
    if t.startswith("~"):
        raise _TemplateError("The route template cannot start with a '~' character unless followed by a '/'.")
    segments: list[list[Part]] = []
    names: set[str] = set()
    i = 0
    while i < len(t):
        if t[i] == "/":
            raise _TemplateError("The route template separator character '/' cannot appear consecutively. "
                                 "It must be separated by either a parameter or a literal value.")
        parts: list[Part] = []
        while i < len(t) and t[i] != "/":
            if t[i] == "{" and i + 1 >= len(t):
                raise _TemplateError(_MISMATCHED)
            part, i = _parameter(t, i, names) if t[i] == "{" and t[i + 1] != "{" else _literal(t, i)
            parts.append(part)
        _check_segment(parts)
        segments.append(parts)
        i += 1
    if any(isinstance(p, _Param) and p.catch_all for s in segments[:-1] for p in s):
        raise _TemplateError("A catch-all parameter can only appear as the last segment of the route template.")
    return segments


def _parameter(t: str, i: int, names: set[str]) -> tuple[_Param, int]:
    """RoutePatternParser.ParseParameter, from ``t[i] == '{'``; '{{' and '}}' escape braces."""
    start, i = i, i + 1
    while True:
        if t[i] == "{":
            if i + 1 >= len(t):
                raise _TemplateError(_MISMATCHED)
            i += 1
            if t[i] != "{":
                raise _TemplateError("In a route parameter, '{' and '}' must be escaped with '{{' and '}}'.")
        elif t[i] == "}":
            if i + 1 >= len(t) or t[i + 1] != "}":
                i += 1
                break
            i += 1
        i += 1
        if i >= len(t):
            raise _TemplateError(_MISMATCHED)
    text = t[start:i]
    if text == "{}":
        raise _TemplateError(_INVALID_NAME.format(""))
    inside = text[1:-1].replace("}}", "}").replace("{{", "{")
    param = _parse_parameter(inside)
    if inside.startswith("*") and inside.endswith("?"):
        raise _TemplateError("A catch-all parameter cannot be marked optional.")
    if param.optional and param.default is not None:
        raise _TemplateError("An optional parameter cannot have default value.")
    if not param.name or any(c in "/{}?*" for c in param.name):
        raise _TemplateError(_INVALID_NAME.format(param.name))
    if param.name.lower() in names:
        raise _TemplateError(f"The route parameter name '{param.name}' appears more than one time in the route "
                             "template.")
    names.add(param.name.lower())
    return param, i


def _literal(t: str, i: int) -> tuple[str, int]:
    """RoutePatternParser.ParseLiteral."""
    start = i
    while i < len(t) and t[i] != "/":
        if t[i] in "{}":
            if i + 1 >= len(t) or (t[i] == "}" and t[i + 1] != "}"):
                raise _TemplateError(_MISMATCHED)
            if t[i + 1] != t[i]:
                break  # a parameter starts here
            i += 1
        i += 1
    literal = t[start:i].replace("}}", "}").replace("{{", "{")
    if "?" in literal:
        raise _TemplateError(f"The literal section '{literal}' is invalid. Literal sections cannot contain the '?' "
                             "character.")
    return literal, i


def _show(part: Part) -> str:
    """RoutePatternPart.DebuggerToString, as the segment errors quote it."""
    if isinstance(part, str):
        return part
    policies = "".join(":" + c for c in part.constraints)
    return ("{" + "*" * part.catch_all + part.name + policies + (f"={part.default}" if part.default is not None else "")
            + "?" * part.optional + "}")


def _check_segment(parts: list[Part]) -> None:
    """RoutePatternParser.IsSegmentValid."""
    if len(parts) > 1 and any(isinstance(p, _Param) and p.catch_all for p in parts):
        raise _TemplateError("A path segment that contains more than one section, such as a literal section or a "
                             "parameter, cannot contain a catch-all parameter.")
    for n, p in enumerate(parts):
        if isinstance(p, _Param) and p.optional and len(parts) > 1:
            segment = "".join(map(_show, parts))
            if n != len(parts) - 1:
                raise _TemplateError(f"An optional parameter must be at the end of the segment. In the segment "
                                     f"'{segment}', optional parameter '{p.name}' is followed by "
                                     f"'{_show(parts[n + 1])}'.")
            if parts[n - 1] != ".":
                raise _TemplateError(f"In the segment '{segment}', the optional parameter '{p.name}' is preceded by an "
                                     f"invalid segment '{_show(parts[n - 1])}'. Only a period (.) can precede an "
                                     "optional parameter.")
    if any(isinstance(a, _Param) and isinstance(b, _Param) for a, b in zip(parts, parts[1:])):
        raise _TemplateError("A path segment cannot contain two consecutive parameters. They must be separated by a "
                             "'/' or by a literal string.")


# --- inline constraints: RouteOptions' default map; the X format of Guid is not accepted here ---------
_WS = "[ \t\n\v\f\r]*"
_INTEGER = re.compile(_WS + "([+-]?[0-9]+)" + _WS)
_FIXED = r"[+-]?(?:[0-9][0-9,]*(?:\.[0-9]*)?|\.[0-9]+)"
_NUMBER = re.compile(_WS + "(?:" + _FIXED + "(?:[eE][+-]?[0-9]+)?|(?i:[+-]?infinity|nan))" + _WS)
_DECIMAL = re.compile(_WS + _FIXED + _WS)
_D = "-".join(f"[0-9a-fA-F]{{{n}}}" for n in (8, 4, 4, 4, 12))
_GUID = re.compile(_WS + rf"(?:[0-9a-fA-F]{{32}}|{_D}|\{{{_D}\}}|\({_D}\))" + _WS)
Check = Callable[[str], bool]


def _integer(value: str, bits: int = 64) -> int | None:
    m = _INTEGER.fullmatch(value)
    n = int(m.group(1)) if m else None
    return n if n is not None and -(2 ** (bits - 1)) <= n < 2 ** (bits - 1) else None


def _arg(text: str, at_least: int | None = None) -> int:
    """A constructor argument (Convert.ChangeType); constructors refuse out-of-range values."""
    n = _integer(text)
    if n is None or (at_least is not None and n < at_least):
        raise ValueError(text)
    return n


def _between(low: int | None, high: int | None, measure: Callable[[str], int | None]) -> Check:
    def check(value: str) -> bool:
        x = measure(value)
        return x is not None and (low is None or x >= low) and (high is None or x <= high)
    return check


def _datetime(value: str) -> bool:  # DateTime.TryParse takes more forms than ISO 8601
    try:
        datetime.fromisoformat(value.strip())
        return True
    except ValueError:
        return False


def _is_file(value: str) -> bool:
    name = value.rsplit("/", 1)[-1]
    dot = name.find(".")
    return dot != -1 and any(c != "." for c in name[dot + 1:])


def _fullmatch(pattern: re.Pattern[str]) -> Check:
    return lambda v: pattern.fullmatch(v) is not None


# key: (type name, {argument count: factory}); the one-constructor, one-parameter constraints take the
# whole argument text (ParameterPolicyActivator), the others split it at commas. regex() runs on
# Python's re, which reads the usual .NET patterns the same way.
_CONSTRAINTS: dict[str, tuple[str, dict[int, Callable[..., Check]]]] = {
    "int": ("IntRouteConstraint", {0: lambda: lambda v: _integer(v, 32) is not None}),
    "long": ("LongRouteConstraint", {0: lambda: lambda v: _integer(v) is not None}),
    "bool": ("BoolRouteConstraint", {0: lambda: lambda v: v.strip().lower() in ("true", "false")}),
    "guid": ("GuidRouteConstraint", {0: lambda: _fullmatch(_GUID)}),
    "datetime": ("DateTimeRouteConstraint", {0: lambda: _datetime}),
    "decimal": ("DecimalRouteConstraint", {0: lambda: _fullmatch(_DECIMAL)}),
    "double": ("DoubleRouteConstraint", {0: lambda: _fullmatch(_NUMBER)}),
    "float": ("FloatRouteConstraint", {0: lambda: _fullmatch(_NUMBER)}),
    "alpha": ("AlphaRouteConstraint", {0: lambda: _fullmatch(re.compile("[A-Za-z]*"))}),
    "required": ("RequiredRouteConstraint", {0: lambda: lambda v: v != ""}),
    "file": ("FileNameRouteConstraint", {0: lambda: _is_file}),
    "nonfile": ("NonFileNameRouteConstraint", {0: lambda: lambda v: not _is_file(v)}),
    "minlength": ("MinLengthRouteConstraint", {1: lambda n: _between(_arg(n, 0), None, len)}),
    "maxlength": ("MaxLengthRouteConstraint", {1: lambda n: _between(None, _arg(n, 0), len)}),
    "length": ("LengthRouteConstraint", {1: lambda n: _between(_arg(n, 0), _arg(n, 0), len),
                                         2: lambda a, b: _between(_arg(a, 0), _arg(b, _arg(a, 0)), len)}),
    "min": ("MinRouteConstraint", {1: lambda n: _between(_arg(n), None, _integer)}),
    "max": ("MaxRouteConstraint", {1: lambda n: _between(None, _arg(n), _integer)}),
    "range": ("RangeRouteConstraint", {2: lambda a, b: _between(_arg(a), _arg(b, _arg(a)), _integer)}),
    "regex": ("RegexInlineRouteConstraint", {1: lambda p: lambda v: re.search(p, v, re.I) is not None}),
}
_WHOLE_ARGUMENT = ("minlength", "maxlength", "min", "max", "regex")


def _constraint(param: str, text: str, template: str) -> Check:
    """DefaultInlineConstraintResolver, as RouteConstraintBuilder.AddResolvedConstraint calls it."""
    paren = text.find("(")
    key, args = (text[:paren], text[paren + 1:-1]) if paren >= 0 and text.endswith(")") else (text, None)
    if key.lower() not in _CONSTRAINTS:
        raise _ConstraintError(f"The constraint entry '{param}' - '{text}' on the route '{template}' could not be "
                               "resolved by the constraint resolver of type 'DefaultInlineConstraintResolver'.")
    type_name, factories = _CONSTRAINTS[key.lower()]
    whole = key.lower() in _WHOLE_ARGUMENT
    arguments = [args] if whole else [a.strip() for a in args.split(",")] if args is not None else []
    if len(arguments) not in factories:
        raise _ConstraintError(f"Could not find a constructor for constraint type '{type_name}' with the following "
                               f"number of parameters: {len(arguments)}.")
    try:
        if None in arguments:
            raise ValueError("no argument")
        if key.lower() == "regex":
            re.compile(arguments[0])  # type: ignore[arg-type]
        return factories[len(arguments)](*arguments)
    except (ValueError, re.error):
        raise _ConstraintError("An error occurred while trying to create an instance of "
                               f"'Microsoft.AspNetCore.Routing.Constraints.{type_name}'.") from None


# --- matching: RoutePatternMatcher over PathTokenizer's segments ------------------------------------
class Route:
    """A function's route template, parsed like ASP.NET Core does; matches request paths."""

    def __init__(self, function_name: str, prefix: str, route: str):
        self.template = f"{prefix}/{route}" if prefix else route  # WebJobsRouteBuilder.BuildRouteTemplate
        try:
            self.segments = _parse_template(self.template)
            self._params = [p for s in self.segments for p in s if isinstance(p, _Param)]
            self.checks = [(p.name, _constraint(p.name, c, self.template)) for p in self._params for c in p.constraints]
        except (_TemplateError, _ConstraintError) as e:
            # RouteBase wraps what TemplateParser (ArgumentException) or the resolver threw; FlattenException.
            inner = f"{e} (Parameter 'routeTemplate')." if isinstance(e, _TemplateError) else str(e)
            raise RouteCreationError(f"An error occurred while creating the route with name '{function_name}' and "
                                     f"template '{self.template}'. {inner}") from None
        self._regexes = {i: _segment_regexes(s) for i, s in enumerate(self.segments)
                         if len(s) > 1 or isinstance(s[0], str)}

    def match(self, path: str) -> dict[str, str] | None:
        """Route values for a request path (decoded, starting with '/'), or None. A trailing '/' is
        ignored, an empty segment never matches, literals ignore case, constraints apply."""
        body = path[1:]
        request = body.removesuffix("/").split("/") if body else []
        values: dict[str, str] = {}
        offset = 1
        for i, text in enumerate(request):
            if not text or i >= len(self.segments):
                return None
            first = self.segments[i][0]
            if isinstance(first, _Param) and first.catch_all:
                values[first.name] = path[offset:]
                break
            if i in self._regexes:
                found = next(((m, names) for r, names in self._regexes[i] if (m := r.fullmatch(text))), None)
                if found is None:
                    return None
                values.update({n: v for n, v in zip(found[1], found[0].groups()) if v is not None})
            else:
                values[first.name] = text  # type: ignore[union-attr]
            offset += len(text) + 1
        else:
            for parts in self.segments[len(request):]:
                p = parts[0]
                if len(parts) > 1 or isinstance(p, str) or not (p.catch_all or p.optional or p.default is not None):
                    return None
        values.update({p.name: p.default for p in self._params if p.name not in values and p.default is not None})
        if not all(check(values[name]) for name, check in self.checks if name in values):
            return None
        return values


def _segment_regexes(parts: list[Part]) -> list[tuple[re.Pattern[str], list[str]]]:
    """A literal or complex segment ('{name}.{ext?}', 'v{n}') as regexes and their parameters. The
    greedy parameters give what ASP.NET's right-to-left literal search gives; a trailing optional
    parameter is tried with its period first, then without (MatchComplexSegment)."""
    def compiled(ps: list[Part]) -> tuple[re.Pattern[str], list[str]]:
        regex = "".join(f"(?i:{re.escape(p)})" if isinstance(p, str) else "(.+)" for p in ps)
        return re.compile(regex), [p.name for p in ps if isinstance(p, _Param)]
    last = parts[-1]
    return [compiled(parts), compiled(parts[:-2])] if isinstance(last, _Param) and last.optional else [compiled(parts)]

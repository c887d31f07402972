use serde_json::{Value, json};

use super::Filter;

/// The room key of PROTOCOL.md §7.2; deployments derive their own from their secret.
const PROTOCOL_ROOM_KEY: &[u8] = b"^m&mOISKBvb1xpl1mRsrylaQXpjb&IJX";

/// The room id of `{"equals": {"a": 1}}` on idx/col, with `PROTOCOL_ROOM_KEY`.
const PINNED_ROOM_ID: &str = "f190725df7b370b88e470e0e4e6367a9928a7f185162d31c4673fee105a23c12";

fn filter(f: Value) -> Filter {
    Filter::compile(&f, 100).unwrap_or_else(|e| panic!("{f} should compile: {e}"))
}

fn matches(f: Value, doc: Value) -> bool {
    filter(f).matches(&doc)
}

fn error(f: Value) -> String {
    Filter::compile(&f, 100)
        .err()
        .unwrap_or_else(|| panic!("{f} should be refused"))
}

#[test]
fn everything() {
    assert!(matches(json!({}), json!({"a": 1})));
}

#[test]
fn equals_same_type_and_value() {
    let f = || json!({"equals": {"name.first": "Ada"}});
    assert!(matches(f(), json!({"name": {"first": "Ada"}})));
    assert!(!matches(f(), json!({"name": {"first": "Bob"}})));
    assert!(!matches(f(), json!({"name": "Ada"})), "missing path");
    assert!(
        !matches(f(), json!({"name": [{"first": "Ada"}]})),
        "paths do not step into arrays"
    );
    assert!(
        matches(json!({"equals": {"n": 1}}), json!({"n": 1.0})),
        "numbers compare numerically"
    );
    assert!(
        !matches(json!({"equals": {"n": 1}}), json!({"n": "1"})),
        "type mismatch"
    );
    assert!(matches(json!({"equals": {"n": null}}), json!({"n": null})));
    assert!(!matches(json!({"equals": {"n": null}}), json!({})));
    assert!(matches(
        json!({"equals": {"b": false}}),
        json!({"b": false})
    ));
}

#[test]
fn in_strings() {
    let f = || json!({"in": {"c": ["red", "blue"]}});
    assert!(matches(f(), json!({"c": "blue"})));
    assert!(!matches(f(), json!({"c": "green"})));
    assert!(!matches(f(), json!({})));
}

#[test]
fn exists_and_missing() {
    assert!(
        matches(json!({"exists": "a.b"}), json!({"a": {"b": null}})),
        "null values exist"
    );
    assert!(!matches(json!({"exists": "a.b"}), json!({"a": {}})));
    assert!(
        matches(json!({"exists": {"field": "a"}}), json!({"a": 0})),
        "legacy form"
    );
    assert!(matches(
        json!({"exists": "tags[\"x\"]"}),
        json!({"tags": ["y", "x"]})
    ));
    assert!(
        !matches(json!({"exists": "tags[\"x\"]"}), json!({"tags": "x"})),
        "not an array"
    );
    assert!(matches(json!({"exists": "n[3]"}), json!({"n": [1, 3.0]})));
    assert!(
        matches(json!({"exists": "we\\[ird\\]"}), json!({"we[ird]": 1})),
        "escaped brackets"
    );
    assert!(matches(json!({"missing": "a"}), json!({"b": 1})));
    assert!(!matches(json!({"missing": "a"}), json!({"a": null})));
    assert!(
        matches(json!({"missing": "tags[\"x\"]"}), json!({"tags": "x"})),
        "non-array field"
    );
    assert!(
        matches(json!({"missing": "tags[\"x\"]"}), json!({})),
        "missing field"
    );
}

#[test]
fn range_bounds_and_types() {
    let f = || json!({"range": {"age": {"gte": 18, "lt": 65}}});
    assert!(matches(f(), json!({"age": 18})));
    assert!(matches(f(), json!({"age": 64.9})));
    assert!(!matches(f(), json!({"age": 65})));
    assert!(!matches(f(), json!({"age": 17})));
    assert!(!matches(f(), json!({"age": "30"})), "range on a string");
    assert!(!matches(f(), json!({})));
    assert!(matches(
        json!({"range": {"x": {"gt": 0}}}),
        json!({"x": 0.001})
    ));
    assert!(!matches(
        json!({"range": {"x": {"gt": 0}}}),
        json!({"x": 0})
    ));
}

#[test]
fn regexp_forms_and_flags() {
    assert!(matches(
        json!({"regexp": {"s": "^ab+c"}}),
        json!({"s": "abbbcd"})
    ));
    assert!(
        matches(json!({"regexp": {"s": "b+c"}}), json!({"s": "xxabc"})),
        "unanchored"
    );
    assert!(!matches(
        json!({"regexp": {"s": "^ABC"}}),
        json!({"s": "abc"})
    ));
    assert!(matches(
        json!({"regexp": {"s": {"value": "^ABC", "flags": "i"}}}),
        json!({"s": "abc"})
    ));
    assert!(matches(
        json!({"regexp": {"s": {"value": "^b$", "flags": "mg"}}}),
        json!({"s": "a\nb"})
    ));
    assert!(matches(
        json!({"regexp": {"s": {"value": "a.b", "flags": "s"}}}),
        json!({"s": "a\nb"})
    ));
    assert!(
        !matches(json!({"regexp": {"s": "a"}}), json!({"s": 1})),
        "not a string"
    );
    assert_eq!(
        error(json!({"regexp": {"s": {"value": "a", "flags": "y"}}})),
        "\"regexp.s\": cannot parse regexp expression \"/a/y\" (invalid flag \"y\")"
    );
    assert!(
        error(json!({"regexp": {"s": "(unclosed"}}))
            .starts_with("\"regexp.s\": cannot parse regexp expression \"/(unclosed/\" (")
    );
}

#[test]
fn ids() {
    let f = || json!({"ids": {"values": ["a", "b"]}});
    assert!(matches(f(), json!({"_id": "b"})));
    assert!(!matches(f(), json!({"_id": "c"})));
    assert!(!matches(f(), json!({"x": 1})), "no _id never matches");
}

#[test]
fn match_is_recursive_and_partial() {
    let f = || json!({"match": {"user": {"name": "Ada", "tags": ["x"]}, "n": 1}});
    assert!(matches(
        f(),
        json!({"user": {"name": "Ada", "age": 36, "tags": ["y", "x"]}, "n": 1.0, "extra": true})
    ));
    assert!(!matches(
        f(),
        json!({"user": {"name": "Ada", "tags": ["y"]}, "n": 1})
    ));
    assert!(!matches(
        f(),
        json!({"user": {"name": "Ada", "tags": ["x"]}})
    ));
}

#[test]
fn select_an_array_element() {
    let f = |index: i64| json!({"select": {"field": "items", "index": index, "query": {"equals": {"value": "c"}}}});
    let doc = json!({"items": ["a", "b", "c"]});
    assert!(matches(f(2), doc.clone()));
    assert!(
        matches(f(-1), doc.clone()),
        "negative index counts from the end"
    );
    assert!(!matches(f(0), doc.clone()));
    assert!(!matches(f(5), doc));
    assert!(!matches(f(0), json!({"items": "abc"})));
}

#[test]
fn geo_keywords_with_every_point_format() {
    let montpellier = json!({"lat": 43.6108, "lon": 3.8767});
    for point in [
        json!([43.6108, 3.8767]),
        json!("43.6108, 3.8767"),
        montpellier.clone(),
        json!({"latLon": [43.6108, 3.8767]}),
        json!("spfb05ngm"),
    ] {
        let doc = json!({"loc": point});
        assert!(
            matches(
                json!({"geoDistance": {"loc": [43.6, 3.9], "distance": "5km"}}),
                doc.clone()
            ),
            "{doc}"
        );
        assert!(matches(
            json!({"geoBoundingBox": {"loc": {"top": 44, "left": 3, "bottom": 43, "right": 4}}}),
            doc.clone()
        ));
        assert!(matches(
            json!({"geoBoundingBox": {"loc": {"topLeft": "44, 3", "bottom_right": [43, 4]}}}),
            doc.clone()
        ));
        assert!(matches(
            json!({"geoPolygon": {"loc": {"points": [[44, 3], [44, 4], [43, 4], [43, 3]]}}}),
            doc.clone()
        ));
        assert!(matches(
            json!({"geoDistanceRange": {"loc": "43.6, 3.9", "from": "1m", "to": "10 km"}}),
            doc
        ));
    }
    let paris = json!({"loc": [48.8566, 2.3522]});
    assert!(!matches(
        json!({"geoDistance": {"loc": [43.6, 3.9], "distance": "100km"}}),
        paris.clone()
    ));
    assert!(!matches(
        json!({"geoPolygon": {"loc": {"points": [[44, 3], [44, 4], [43, 4]]}}}),
        paris.clone()
    ));
    assert!(!matches(
        json!({"geoDistance": {"loc": [43.6, 3.9], "distance": "100km"}}),
        json!({"loc": "nowhere"})
    ));
    assert!(matches(
        json!({"geoDistanceRange": {"loc": [43.6, 3.9], "from": "500km", "to": "700km"}}),
        paris
    ));
}

#[test]
fn operands() {
    let doc = json!({"a": 1, "b": 2});
    assert!(matches(
        json!({"and": [{"equals": {"a": 1}}, {"equals": {"b": 2}}]}),
        doc.clone()
    ));
    assert!(!matches(
        json!({"and": [{"equals": {"a": 1}}, {"equals": {"b": 3}}]}),
        doc.clone()
    ));
    assert!(matches(
        json!({"or": [{"equals": {"a": 9}}, {"equals": {"b": 2}}]}),
        doc.clone()
    ));
    assert!(!matches(
        json!({"or": [{"equals": {"a": 9}}, {"equals": {"b": 9}}]}),
        doc.clone()
    ));
    assert!(matches(json!({"not": {"equals": {"a": 9}}}), doc.clone()));
    assert!(
        matches(json!({"not": {"equals": {"zzz": 9}}}), doc.clone()),
        "not over a missing field"
    );
    assert!(!matches(json!({"not": {"exists": "a"}}), doc.clone()));
    let b = |clauses: Value| json!({"bool": clauses});
    assert!(matches(
        b(json!({"must": [{"equals": {"a": 1}}], "must_not": [{"equals": {"b": 3}}]})),
        doc.clone()
    ));
    assert!(!matches(
        b(json!({"must_not": [{"equals": {"b": 2}}]})),
        doc.clone()
    ));
    assert!(matches(
        b(json!({"should": [{"equals": {"a": 5}}, {"equals": {"a": 1}}]})),
        doc.clone()
    ));
    assert!(matches(
        b(json!({"should_not": [{"equals": {"a": 1}}, {"equals": {"a": 2}}]})),
        doc.clone()
    ));
    assert!(!matches(
        b(json!({"should_not": [{"equals": {"a": 1}}]})),
        doc.clone()
    ));
    assert!(
        matches(
            json!({"not": {"and": [{"equals": {"a": 1}}, {"equals": {"b": 3}}]}}),
            doc
        ),
        "De Morgan"
    );
}

#[test]
fn error_messages_name_the_bad_part() {
    let cases = [
        (
            json!({"a": 1, "b": 2}),
            "Invalid filter syntax. Filters must have one keyword only",
        ),
        (json!({"foo": {}}), "\"foo\": unknown keyword"),
        (
            json!({"equals": {"a": 1, "b": 2}}),
            "\"equals\": expected object to have exactly 1 property, got 2",
        ),
        (
            json!({"equals": {"a": [1]}}),
            "\"equals.a\": must either be a string, a number, a boolean, or null",
        ),
        (
            json!({"equals": {"": 1}}),
            "\"equals\": cannot test empty field name",
        ),
        (json!({"equals": "a"}), "\"equals\": must be an object"),
        (json!({"in": {"a": []}}), "\"in.a\": cannot be empty"),
        (
            json!({"in": {"a": [1]}}),
            "\"in.a\": must hold only values of type \"string\"",
        ),
        (json!({"in": {"a": "x"}}), "\"in.a\": must be an array"),
        (
            json!({"exists": 3}),
            "\"exists\": must be either a string or a non-empty object",
        ),
        (
            json!({"exists": "a[oops]"}),
            "\"exists\": contains an invalid array value (\"a[oops]\")",
        ),
        (
            json!({"exists": ""}),
            "\"exists\": cannot test empty field name",
        ),
        (
            json!({"range": {"age": {}}}),
            "\"range.age\": must be a non-empty object",
        ),
        (
            json!({"range": {"age": {"gt": "1"}}}),
            "\"range.age.gt\": must be a number",
        ),
        (
            json!({"range": {"age": {"gt": 1, "gte": 2}}}),
            "\"range.age\": only 1 lower boundary allowed",
        ),
        (
            json!({"range": {"age": {"lt": 1, "lte": 2}}}),
            "\"range.age\": only 1 upper boundary allowed",
        ),
        (
            json!({"range": {"age": {"gt": 5, "lt": 5}}}),
            "\"range.age\": lower boundary must be strictly inferior to the upper one",
        ),
        (
            json!({"range": {"age": {"above": 5}}}),
            "\"range.age\": \"above\" is not an allowed attribute (allowed: gt,gte,lt,lte)",
        ),
        (
            json!({"regexp": {"s": {"flags": "i"}}}),
            "\"regexp.s\": the property \"value\" is missing",
        ),
        (
            json!({"ids": {"values": []}}),
            "\"ids.values\": cannot be empty",
        ),
        (
            json!({"ids": {"vals": ["a"]}}),
            "\"ids\": \"vals\" is not an allowed attribute (allowed: values)",
        ),
        (
            json!({"match": {}}),
            "\"match\": must be a non-empty object",
        ),
        (
            json!({"select": {"field": "a", "index": 1.5, "query": {}}}),
            "\"select.index\": cannot have decimals, must be an integer",
        ),
        (
            json!({"select": {"field": "a", "index": 1}}),
            "\"select\": expected object to have exactly 3 properties, got 2",
        ),
        (
            json!({"select": {"field": "a", "index": 0, "query": {"nope": 1}}}),
            "\"select.query.nope\": unknown keyword",
        ),
        (
            json!({"geoDistance": {"loc": [0, 0], "distance": "far"}}),
            "\"geoDistance.distance\": unable to parse distance value \"far\"",
        ),
        (
            json!({"geoDistance": {"loc": "nowhere", "distance": "1km"}}),
            "\"geoDistance.loc\": unrecognized geo-point format",
        ),
        (
            json!({"geoDistanceRange": {"loc": [0, 0], "from": "2km", "to": "1km"}}),
            "\"geoDistanceRange\": inner radius must be smaller than outer radius",
        ),
        (
            json!({"geoPolygon": {"loc": {"points": [[0, 0], [1, 1]]}}}),
            "\"geoPolygon.loc.points\": at least 3 points are required to build a polygon",
        ),
        (
            json!({"geoPolygon": {"loc": {"points": [[0, 0], [1, 1], "x"]}}}),
            "\"geoPolygon.loc.points\": unrecognized point format",
        ),
        (
            json!({"geoBoundingBox": {"loc": {"top": 1}}}),
            "\"geoBoundingBox.loc\": unrecognized geo-point format",
        ),
        (json!({"and": []}), "\"and\": cannot be empty"),
        (
            json!({"or": [{}]}),
            "\"or\": can only contain non-empty objects",
        ),
        (
            json!({"and": {"equals": {"a": 1}}}),
            "\"and\": must be an array",
        ),
        (json!({"not": {}}), "\"not\": must be a non-empty object"),
        (
            json!({"bool": {"must": [], "maybe": []}}),
            "\"bool\": \"maybe\" is not an allowed attribute (allowed: must,must_not,should,should_not)",
        ),
        (
            json!({"and": [{"equals": {"a": 1}}, {"range": {"b": {"gt": "x"}}}]}),
            "\"and.range.b.gt\": must be a number",
        ),
    ];
    for (f, expected) in cases {
        assert_eq!(error(f.clone()), expected, "{f}");
    }
}

#[test]
fn condition_limit_counts_expanded_values() {
    let f = json!({"and": [{"in": {"a": ["1", "2", "3"]}}, {"ids": {"values": ["x", "y"]}}, {"missing": "z"}]});
    assert!(Filter::compile(&f, 6).is_ok());
    assert_eq!(
        Filter::compile(&f, 5).unwrap_err(),
        "Filter too complex: exceeds the configured maximum number of conditions (conditions: 6, max: 5)"
    );
}

#[test]
fn explosive_normal_forms_are_refused_before_they_are_built() {
    let or = |n: usize| json!({"or": (0..n).map(|i| json!({"equals": {format!("f{i}"): i}})).collect::<Vec<_>>()});
    let f = json!({"and": [or(10), or(10), or(10), or(10)]});
    assert_eq!(
        Filter::compile(&f, 100).unwrap_err(),
        "Filter too complex: its normal form would hold 10000 conjunctions (max: 4096)"
    );
    // The finding of issue 9: 12 two-term `or`s and 76 `equals`, 100 conditions, whose
    // 4,096 conjunctions each held all 88 literals (4-11 s and ~690 MB per subscribe).
    let mut terms: Vec<Value> = (0..12)
        .map(
            |i| json!({"or": [{"equals": {format!("a{i}"): 1}}, {"equals": {format!("b{i}"): 2}}]}),
        )
        .collect();
    terms.extend((0..76).map(|i| json!({"equals": {format!("c{i}"): i}})));
    assert_eq!(
        Filter::compile(&json!({"and": terms}), 100).unwrap_err(),
        "Filter too complex: its normal form would hold 360448 conditions (max: 16384)"
    );
    // The same shape with long values: few literals, but megabytes of normal form.
    let long = "x".repeat(20_000);
    let mut terms: Vec<Value> = (0..6)
        .map(|i| json!({"or": [{"equals": {format!("a{i}"): long}}, {"equals": {format!("b{i}"): long}}]}))
        .collect();
    terms.push(json!({"equals": {"c": long}}));
    assert_eq!(
        Filter::compile(&json!({"and": terms}), 100).unwrap_err(),
        "Filter too complex: its normal form would exceed 1048576 bytes"
    );
}

#[test]
fn large_but_bounded_normal_forms_are_built() {
    // 2^12 conjunctions of 12 literals each: 49,152 literals, over the bound.
    let pair = |i: usize| json!({"or": [{"equals": {format!("a{i}"): 1}}, {"equals": {format!("b{i}"): 2}}]});
    let f = json!({"and": (0..10).map(pair).collect::<Vec<_>>()});
    let built = Filter::compile(&f, 100).unwrap();
    assert_eq!(built.conjunctions.len(), 1024);
    assert!(built.conjunctions.iter().all(|c| c.len() == 10));
    // Literals are shared between conjunctions, not copied.
    let first = &built.conjunctions[0][0];
    let sharing = built
        .conjunctions
        .iter()
        .flatten()
        .filter(|l| std::sync::Arc::ptr_eq(l, first))
        .count();
    assert_eq!(sharing, 512);
    assert!(built.matches(&json!({"a0": 1, "b1": 2, "a2": 1, "a3": 1, "a4": 1, "a5": 1, "a6": 1, "a7": 1, "a8": 1, "b9": 2})));
    assert!(!built.matches(&json!({"a0": 1})));
}

#[test]
fn select_queries_share_the_budget() {
    let pair = |i: usize| json!({"or": [{"equals": {format!("a{i}"): 1}}, {"equals": {format!("b{i}"): 2}}]});
    let explosive = json!({"and": (0..13).map(pair).collect::<Vec<_>>()});
    let f = json!({"select": {"field": "items", "index": 0, "query": explosive}});
    assert_eq!(
        Filter::compile(&f, 100).unwrap_err(),
        "Filter too complex: its normal form would hold 8192 conjunctions (max: 4096)"
    );
    // Nested selects each pay for the text of the ones inside them.
    let long = "y".repeat(100_000);
    let mut nested = json!({"equals": {"value": long}});
    for _ in 0..12 {
        nested = json!({"select": {"field": "value", "index": 0, "query": nested}});
    }
    assert_eq!(
        Filter::compile(&nested, 100).unwrap_err(),
        "Filter too complex: its normal form would exceed 1048576 bytes"
    );
}

#[test]
fn minterms_limit() {
    let f = json!({"or": [{"equals": {"a": 1}}, {"equals": {"a": 2}}, {"equals": {"a": 3}}]});
    assert!(Filter::compile_with(&f, 100, 3).is_ok());
    assert!(Filter::compile_with(&f, 100, 0).is_ok(), "0 = no limit");
    assert_eq!(
        Filter::compile_with(&f, 100, 2).unwrap_err(),
        "Filter too complex: exceeds the configured maximum number of minterms (minterms: 3, max: 2)"
    );
}

#[test]
fn equivalent_filters_share_a_room() {
    let id = |f: Value| filter(f).room_id(PROTOCOL_ROOM_KEY, "idx", "col");
    let a = id(json!({"and": [{"equals": {"a": 1}}, {"equals": {"b": "x"}}]}));
    assert_eq!(a.len(), 64);
    assert!(
        a.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(
        a,
        id(json!({"and": [{"equals": {"b": "x"}}, {"equals": {"a": 1.0}}]})),
        "order and number form"
    );
    assert_eq!(
        a,
        id(json!({"bool": {"must": [{"equals": {"a": 1}}, {"equals": {"b": "x"}}]}}))
    );
    assert_eq!(
        a,
        id(
            json!({"not": {"or": [{"not": {"equals": {"a": 1}}}, {"not": {"equals": {"b": "x"}}}]}})
        )
    );
    assert_eq!(
        id(json!({"in": {"c": ["x", "y"]}})),
        id(json!({"or": [{"equals": {"c": "y"}}, {"equals": {"c": "x"}}]}))
    );
    assert_eq!(
        id(json!({"missing": "a"})),
        id(json!({"not": {"exists": "a"}}))
    );
    assert_eq!(
        id(json!({"regexp": {"s": "x"}})),
        id(json!({"regexp": {"s": {"value": "x", "flags": "g"}}}))
    );
    assert_ne!(
        a,
        filter(json!({"and": [{"equals": {"a": 1}}, {"equals": {"b": "x"}}]})).room_id(
            PROTOCOL_ROOM_KEY,
            "idx",
            "other"
        )
    );
    assert_ne!(
        id(json!({"equals": {"a": 1}})),
        id(json!({"equals": {"a": "1"}}))
    );
    // Ids must not change between versions of a cluster: pin one.
    assert_eq!(id(json!({"equals": {"a": 1}})), PINNED_ROOM_ID);
}

/// Found by fuzzing: each once overflowed a worker's stack and aborted the whole node.
#[test]
fn deep_nesting_is_refused_not_crashed_on() {
    let stacked = format!("a{}", "*".repeat(200));
    let message = error(json!({"regexp": {"s": stacked}}));
    assert!(
        message.starts_with(&format!(
            "\"regexp.s\": cannot parse regexp expression \"/{stacked}/\" ("
        )),
        "{message}"
    );
    let mut nested = json!({"equals": {"a": 1}});
    for _ in 0..40 {
        nested = json!({"not": nested});
    }
    assert_eq!(
        error(nested),
        "Filter too complex: objects and arrays nested deeper than 32 levels"
    );
    let mut fine = json!({"equals": {"a": 1}});
    for _ in 0..10 {
        fine = json!({"not": fine});
    }
    assert!(Filter::compile(&fine, 100).is_ok());
}

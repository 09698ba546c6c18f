use keyward_core::permission::{MAX_DEPTH, MAX_QUERY_LEN, Permission, PermissionError};
use proptest::prelude::*;

fn s(x: &str) -> Permission {
    Permission::Scope(x.to_owned())
}
fn and(v: Vec<Permission>) -> Permission {
    Permission::And(v)
}
fn or(v: Vec<Permission>) -> Permission {
    Permission::Or(v)
}
fn p(q: &str) -> Permission {
    Permission::parse(q).unwrap_or_else(|e| panic!("{q:?}: {e}"))
}
fn err(q: &str) -> PermissionError {
    Permission::parse(q).expect_err(q)
}

#[test]
fn single_scope() {
    assert_eq!(p("orders:read"), s("orders:read"));
    assert_eq!(p("  orders:read\t"), s("orders:read"));
    assert_eq!(p("orders:*"), s("orders:*"));
    assert_eq!(p("*"), s("*"));
    assert_eq!(p("((a))"), s("a"));
}

#[test]
fn and_binds_tighter_than_or() {
    assert_eq!(
        p("a OR b AND c"),
        or(vec![s("a"), and(vec![s("b"), s("c")])])
    );
    assert_eq!(
        p("a AND b OR c"),
        or(vec![and(vec![s("a"), s("b")]), s("c")])
    );
    assert_eq!(
        p("a AND b OR c AND d"),
        or(vec![and(vec![s("a"), s("b")]), and(vec![s("c"), s("d")])])
    );
}

#[test]
fn parentheses_override_precedence() {
    assert_eq!(
        p("(a OR b) AND c"),
        and(vec![or(vec![s("a"), s("b")]), s("c")])
    );
    assert_eq!(
        p("orders:read AND (billing:read OR billing:admin)"),
        and(vec![
            s("orders:read"),
            or(vec![s("billing:read"), s("billing:admin")])
        ])
    );
    assert_eq!(p("(a)AND(b)"), and(vec![s("a"), s("b")]));
}

#[test]
fn same_kind_nesting_is_flattened() {
    assert_eq!(
        p("(a AND b) AND (c AND d)"),
        and(vec![s("a"), s("b"), s("c"), s("d")])
    );
    assert_eq!(
        p("a OR (b OR (c OR d))"),
        or(vec![s("a"), s("b"), s("c"), s("d")])
    );
    assert_eq!(
        p("a AND (b OR c) AND d").to_string(),
        "a AND (b OR c) AND d"
    );
}

#[test]
fn keywords_are_case_insensitive() {
    let expected = or(vec![and(vec![s("a"), s("b")]), s("c")]);
    for q in [
        "a AND b OR c",
        "a and b or c",
        "a And b Or c",
        "a aNd b oR c",
    ] {
        assert_eq!(p(q), expected, "{q}");
    }
    // Only whole words are keywords.
    assert_eq!(p("android OR orange"), or(vec![s("android"), s("orange")]));
}

#[test]
fn errors_name_the_problem_and_its_position() {
    let cases: &[(&str, usize, &str)] = &[
        ("", 0, "empty query"),
        ("   ", 0, "empty query"),
        ("a AND", 5, "expected a scope after AND"),
        ("a AND ", 6, "expected a scope after AND"),
        ("a AND OR b", 6, "expected a scope after AND"),
        ("a AND )", 6, "expected a scope after AND"),
        ("a OR", 4, "expected a scope after OR"),
        ("AND a", 0, "expected a scope"),
        ("(a", 0, "unbalanced parenthesis"),
        ("x AND ((a OR b)", 6, "unbalanced parenthesis"),
        ("a)", 1, "unbalanced parenthesis"),
        ("(a))", 3, "unbalanced parenthesis"),
        (")", 0, "expected a scope"),
        ("()", 1, "expected a scope"),
        ("a b", 2, "unexpected token"),
        ("(a b)", 3, "unexpected token"),
        ("a AND b c", 8, "unexpected token"),
        ("a & b", 2, "unexpected character"),
        ("a && b", 2, "unexpected character"),
        ("é", 0, "unexpected character"),
        ("a OR é", 5, "unexpected character"),
        ("a*b", 0, "invalid scope"),
        ("a OR **", 5, "invalid scope"),
    ];
    for &(q, position, start) in cases {
        let e = err(q);
        assert_eq!(e.position, position, "{q:?}: {e}");
        assert!(e.message.starts_with(start), "{q:?}: {e}");
        assert!(
            e.to_string().ends_with(&format!("at position {position}")),
            "{e}"
        );
    }
}

#[test]
fn length_is_limited() {
    let long = format!("a{}", " OR a".repeat(MAX_QUERY_LEN / 5));
    assert!(long.len() <= MAX_QUERY_LEN);
    assert!(Permission::parse(&long).is_ok());
    let too_long = "a".repeat(MAX_QUERY_LEN + 1);
    let e = err(&too_long);
    assert_eq!(e.position, MAX_QUERY_LEN);
    assert!(e.message.contains("longer"), "{e}");
}

#[test]
fn depth_is_limited() {
    let nest = |n: usize| format!("{}a{}", "(".repeat(n), ")".repeat(n));
    assert_eq!(p(&nest(MAX_DEPTH)), s("a"));
    let e = err(&nest(MAX_DEPTH + 1));
    assert_eq!(e.position, MAX_DEPTH);
    assert!(e.message.contains("nested"), "{e}");
    // Deep input well within the length limit must not overflow the stack.
    assert!(Permission::parse(&"(".repeat(MAX_QUERY_LEN)).is_err());
}

#[test]
fn evaluate_uses_wildcards() {
    let q = p("orders:read AND (billing:read OR billing:admin)");
    assert!(q.evaluate(&["orders:read", "billing:read"]));
    assert!(q.evaluate(&["orders:*", "billing:admin"]));
    assert!(q.evaluate(&["*"]));
    assert!(!q.evaluate(&["orders:read"]));
    assert!(!q.evaluate(&["billing:*"]));
    assert!(!q.evaluate(&[] as &[&str]));
    let owned: Vec<String> = vec!["orders:read".into(), "billing:*".into()];
    assert!(q.evaluate(&owned));
}

#[test]
fn scopes_lists_every_named_scope() {
    assert_eq!(p("a AND (b OR c)").scopes(), ["a", "b", "c"]);
}

fn ast() -> impl Strategy<Value = Permission> {
    let leaf = prop::sample::select(vec!["a", "b", "c", "a:x", "a:*", "*"])
        .prop_map(|x| Permission::Scope(x.to_owned()));
    leaf.prop_recursive(5, 48, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(Permission::And),
            prop::collection::vec(inner, 1..4).prop_map(Permission::Or),
        ]
    })
}

fn granted() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(
        prop::sample::select(vec!["a", "b", "c", "a:x", "a:y", "a:*", "*", "d"]),
        0..4,
    )
}

fn query_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "a", "b:c", "*", "x*", "AND", "OR", "and", "or", "(", ")", " ", "  ", "*a", "&", "é",
            "\t", "Or",
        ]),
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_strings(q in "\\PC{0,200}") {
        if let Err(e) = Permission::parse(&q) {
            prop_assert!(e.position <= q.len());
        }
    }

    #[test]
    fn parse_never_panics_on_query_like_strings(q in query_text()) {
        match Permission::parse(&q) {
            Ok(parsed) => prop_assert_eq!(Permission::parse(&parsed.to_string()).unwrap(), parsed),
            Err(e) => prop_assert!(e.position <= q.len() && q.is_char_boundary(e.position)),
        }
    }

    /// Printing any tree (flattened or not) and parsing it back keeps its meaning.
    #[test]
    fn print_then_parse_keeps_evaluation(tree in ast(), g in granted()) {
        let printed = tree.to_string();
        let reparsed = Permission::parse(&printed).unwrap();
        prop_assert_eq!(reparsed.evaluate(&g), tree.evaluate(&g), "{}", printed);
        // And printing is a fixpoint once flattened.
        prop_assert_eq!(Permission::parse(&reparsed.to_string()).unwrap(), reparsed);
    }
}

//! Properties over arbitrary input: the parser and the renderer never panic,
//! and no value can add a line, a section or a directive to a unit file, or
//! a `%` specifier the template did not write.

use orch::config::Source;
use orch::model::Deployment;
use orch::render;
use proptest::prelude::*;

fn source(text: String) -> Source {
    Source {
        path: "prop.toml".into(),
        text,
    }
}

/// A configuration built as TOML data, so any string is a valid TOML value.
fn config(values: &[String; 6]) -> String {
    let mut env = toml::Table::new();
    env.insert("K".into(), values[4].clone().into());
    let mut master = toml::Table::new();
    master.insert(
        "exec_start".into(),
        format!("/bin/app {}", values[0]).into(),
    );
    master.insert("description".into(), values[1].clone().into());
    master.insert("environment".into(), env.into());
    // Non-empty: an empty optional value leaves its directive out, by design.
    master.insert(
        "working_directory".into(),
        format!("/srv/{}", values[5]).into(),
    );
    let mut worker = toml::Table::new();
    worker.insert("kind".into(), "w".into());
    worker.insert("count".into(), 2.into());
    worker.insert("exec_start".into(), format!("/bin/w {}", values[2]).into());
    worker.insert("description".into(), values[3].clone().into());
    let mut deployment = toml::Table::new();
    deployment.insert("name".into(), "prop".into());
    let mut root = toml::Table::new();
    root.insert("deployment".into(), deployment.into());
    root.insert("master".into(), master.into());
    root.insert("workers".into(), toml::Value::Array(vec![worker.into()]));
    toml::to_string(&root).unwrap()
}

/// Sections and directive names, in order: the structure a template wrote.
fn skeleton(unit: &str) -> Vec<String> {
    unit.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            if l.starts_with('[') {
                l.to_string()
            } else {
                l.split('=').next().unwrap().to_string()
            }
        })
        .collect()
}

/// Every `%` in `line` is part of a `%%` pair.
fn percent_escaped(line: &str) -> bool {
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '%' && chars.next() != Some('%') {
            return false;
        }
    }
    true
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        // Anything at all, control characters included.
        any::<String>(),
        // The characters that matter in a unit file, densely.
        proptest::collection::vec(
            prop_oneof![
                Just('\n'),
                Just('\r'),
                Just('\0'),
                Just('\\'),
                Just('%'),
                Just('$'),
                Just(';'),
                Just('['),
                Just(']'),
                Just('='),
                Just('"'),
                Just('\''),
                Just(' '),
                Just('{'),
                Just('}'),
                Just('a'),
                Just('i'),
                Just('n'),
            ],
            0..24
        )
        .prop_map(|v| v.into_iter().collect()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = Deployment::from_source(&source(text), None).map(|d| render::render(&d));
    }

    #[test]
    fn values_never_change_the_structure(values in proptest::array::uniform6(value())) {
        let plain = Deployment::from_source(&source(config(&std::array::from_fn(|_| "x".to_string()))), None).unwrap();
        let expected: Vec<Vec<String>> = render::render(&plain).unwrap().iter().map(|u| skeleton(&u.content)).collect();
        let Ok(d) = Deployment::from_source(&source(config(&values)), None) else {
            // Refused with an error naming the key: fine.
            return Ok(());
        };
        let Ok(units) = render::render(&d) else { return Ok(()) };
        for (u, skel) in units.iter().zip(&expected) {
            prop_assert_eq!(&skeleton(&u.content), skel, "{}", u.content);
            let checked = match u.unit.ends_with(".slice") {
                true => render::check_slice_file(&u.content),
                false => render::check_unit_file(&u.content),
            };
            prop_assert!(checked.is_ok());
            for line in u.content.lines().filter(|l| !l.starts_with('#')) {
                prop_assert!(percent_escaped(line), "unescaped % in {:?}", line);
            }
        }
    }
}

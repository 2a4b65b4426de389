//! Human-readable rendering of plans and results (Terraform's symbols), with
//! colour only when writing to a terminal. JSON goes through serde directly.

use std::fmt::Write;

use serde_json::Value;

use crate::plan::{Action, ChangeClass, GuestPlan, Plan};

/// ANSI colours, or nothing.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

fn symbol(entry: &GuestPlan) -> (&'static str, &'static str, &'static str) {
    if entry.orphan && entry.action == Action::Noop {
        return ("?", "33", "orphan");
    }
    match entry.action {
        Action::Create => ("+", "32", "create"),
        Action::Update => ("~", "33", "update in place"),
        Action::Restart => ("!", "33", "restart"),
        Action::Rebuild => ("-/+", "31", "rebuild: destroys the root filesystem"),
        Action::Remove => ("-", "31", "remove"),
        Action::Start => (">", "32", "start"),
        Action::Stop => ("#", "33", "stop"),
        Action::Noop => (" ", "0", "no changes"),
    }
}

fn show(value: &Value) -> String {
    match value {
        Value::Null => String::from("(unset)"),
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// The plan as text. Guests with nothing to do and nothing to say are left out.
pub fn plan_text(plan: &Plan, style: Style) -> String {
    let mut out = String::new();
    let shown: Vec<&GuestPlan> = plan
        .guests
        .iter()
        .filter(|g| g.action != Action::Noop || g.orphan)
        .collect();
    let quiet = !plan.has_changes() && !plan.has_blocked();
    if quiet {
        out.push_str("No changes. The host matches the guest files.\n");
        if shown.is_empty() {
            return out;
        }
        out.push('\n');
    }
    for template in &plan.templates_to_build {
        let _ = writeln!(
            out,
            "  {} template {template} (build)",
            style.paint("32", "+")
        );
    }
    for entry in &shown {
        let (sym, colour, words) = symbol(entry);
        let _ = writeln!(
            out,
            "{:>5} {} ({words})",
            style.paint(colour, sym),
            style.paint("1", &entry.name)
        );
        for reason in &entry.reasons {
            let _ = writeln!(out, "        # {reason}");
        }
        for change in &entry.changes {
            let class = match change.class {
                ChangeClass::Live => "live",
                ChangeClass::Restart => "restart",
                ChangeClass::Rebuild => "rebuild",
                ChangeClass::Record => "record",
            };
            let _ = writeln!(
                out,
                "        ~ {}: {} -> {}  [{class}]",
                change.field,
                show(&change.before),
                show(&change.after)
            );
        }
        if let Some(blocked) = &entry.blocked {
            let _ = writeln!(out, "        {} {blocked}", style.paint("31", "BLOCKED:"));
        }
    }
    if quiet {
        return out;
    }
    let count = |action: Action| {
        plan.guests
            .iter()
            .filter(|g| g.action == action && g.blocked.is_none())
            .count()
    };
    let _ = writeln!(
        out,
        "\nPlan: {} to create, {} to update, {} to restart, {} to rebuild, {} to remove, {} to start, {} to stop.",
        count(Action::Create),
        count(Action::Update),
        count(Action::Restart),
        count(Action::Rebuild),
        count(Action::Remove),
        count(Action::Start),
        count(Action::Stop),
    );
    let blocked = plan.guests.iter().filter(|g| g.blocked.is_some()).count();
    if blocked > 0 {
        let _ = writeln!(out, "{blocked} blocked: see the reasons above.");
    }
    out
}

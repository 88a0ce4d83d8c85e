//! Dependency resolution: which version of every component a deployment needs.
//!
//! Roots (the components a deployment names, with the origin that asked for them) and the
//! dependencies of chosen versions are requirements; the resolver picks, for every
//! component, the highest available version that satisfies every requirement on it. It
//! backtracks: if a version's dependencies cannot be satisfied, the next lower one is tried,
//! and the dependencies of a version only count while that version is chosen.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use crate::model::Recipe;
use crate::range::VersionRange;

/// A requirement from outside the dependency graph (a deployment, the CLI, a group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootRequirement {
    /// Component name.
    pub name: String,
    /// Acceptable versions.
    pub requirement: VersionRange,
    /// Who asks, for error messages (e.g. `LOCAL_DEPLOYMENT`, `thinggroup/Fleet`).
    pub origin: String,
}

/// Why no consistent set of versions exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Versions exist, but none satisfies all requirements at once.
    #[error("version conflict for {component}: {}", render_requirements(.requirements))]
    Conflict {
        /// The component whose requirements conflict.
        component: String,
        /// `(who requires, range)` for every requirement on it.
        requirements: Vec<(String, String)>,
    },
    /// No available version satisfies the requirement (or the component is unknown).
    #[error(
        "no available version of {component} satisfies \"{requirement}\" (required by {required_by})"
    )]
    NotFound {
        /// The component that could not be found.
        component: String,
        /// The unsatisfied range.
        requirement: String,
        /// Who requires it.
        required_by: String,
    },
    /// The deployment needs more components than [`MAX_COMPONENTS_PER_DEPLOYMENT`].
    #[error(
        "the deployment needs more than {limit} components (roots and their dependencies); \
         at most {limit} are allowed"
    )]
    TooManyComponents {
        /// The bound.
        limit: usize,
    },
    /// The chosen versions depend on each other in a circle.
    #[error("dependency cycle: {}", .path.join(" -> "))]
    Cycle {
        /// The cycle, first component repeated at the end (`a -> b -> a`).
        path: Vec<String>,
    },
}

fn render_requirements(reqs: &[(String, String)]) -> String {
    let parts: Vec<String> = reqs
        .iter()
        .map(|(by, range)| format!("{by} requires {range}"))
        .collect();
    parts.join(", ")
}

/// Upper bound on versions tried before giving up with the first error found.
const MAX_STEPS: usize = 100_000;

/// Most components one deployment may need (roots and every transitive dependency). A
/// resolution that reaches more fails with [`ResolveError::TooManyComponents`]. The search
/// itself is iterative; the bound keeps its memory and the core's later per-component work
/// (planning, staging, one task per component) proportionate. Real deployments need tens.
pub const MAX_COMPONENTS_PER_DEPLOYMENT: usize = 500;

/// Resolves `roots` and their transitive dependencies against `catalog`, which lists the
/// available recipes (any order, any versions) of a component name. Returns the chosen
/// recipe of every component needed.
pub fn resolve_versions(
    roots: &[RootRequirement],
    catalog: &dyn Fn(&str) -> Vec<Recipe>,
) -> Result<BTreeMap<String, Recipe>, ResolveError> {
    let mut search = Search {
        catalog,
        cache: HashMap::new(),
        steps: 0,
    };
    let mut state = State::default();
    for root in roots {
        state.require(&root.name, &root.origin, &root.requirement);
        if state.order.len() > MAX_COMPONENTS_PER_DEPLOYMENT {
            return Err(ResolveError::TooManyComponents {
                limit: MAX_COMPONENTS_PER_DEPLOYMENT,
            });
        }
    }
    let done = search.solve(state)?;
    let mut out = BTreeMap::new();
    for (name, idx) in done.chosen {
        if let Some(recipe) = search.cache.get(&name).and_then(|c| c.get(idx)) {
            out.insert(name, recipe.clone());
        }
    }
    Ok(out)
}

#[derive(Clone, Default)]
struct State {
    /// Components in the order their first requirement appeared (deterministic search order).
    order: Vec<String>,
    /// Requirements per component: `(who, range)`.
    reqs: HashMap<String, Vec<(String, VersionRange)>>,
    /// Chosen candidate index per component.
    chosen: BTreeMap<String, usize>,
}

impl State {
    fn require(&mut self, name: &str, by: &str, range: &VersionRange) {
        let entry = self.reqs.entry(name.to_owned()).or_insert_with(|| {
            self.order.push(name.to_owned());
            Vec::new()
        });
        entry.push((by.to_owned(), range.clone()));
    }

    fn rendered(&self, name: &str) -> Vec<(String, String)> {
        self.reqs
            .get(name)
            .map(|r| {
                r.iter()
                    .map(|(by, range)| (by.clone(), range.as_str().to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

struct Search<'a> {
    catalog: &'a dyn Fn(&str) -> Vec<Recipe>,
    /// Candidates per name, highest version first, one recipe per version.
    cache: HashMap<String, Rc<Vec<Recipe>>>,
    steps: usize,
}

impl Search<'_> {
    fn candidates(&mut self, name: &str) -> Rc<Vec<Recipe>> {
        let catalog = self.catalog;
        self.cache
            .entry(name.to_owned())
            .or_insert_with(|| {
                let mut list: Vec<Recipe> = catalog(name)
                    .into_iter()
                    .filter(|r| r.name == name)
                    .collect();
                list.sort_by(|a, b| b.version.cmp_precedence(&a.version));
                list.dedup_by(|a, b| a.version.cmp_precedence(&b.version).is_eq());
                Rc::new(list)
            })
            .clone()
    }

    /// Depth-first search with backtracking, on an explicit stack of [`Frame`]s (one per
    /// component being chosen) so that the number of components costs heap, not call stack.
    /// `state` is one shared value: each frame undoes its own attempt before the next one.
    fn solve(&mut self, mut state: State) -> Result<State, ResolveError> {
        let mut frames: Vec<Frame> = Vec::new();
        let mut step = Step::Expand;
        loop {
            step = match step {
                Step::Expand => self.expand(&mut state, &mut frames),
                Step::Failed(e) => match frames.last_mut() {
                    None => return Err(e),
                    Some(frame) => {
                        frame.first_error.get_or_insert(e);
                        Step::NextCandidate
                    }
                },
                Step::Solved => return Ok(state),
                Step::NextCandidate => {
                    // Unreachable: `expand` pushes a frame before asking for a candidate.
                    let Some(frame) = frames.last_mut() else {
                        return Err(ResolveError::Conflict {
                            component: String::new(),
                            requirements: Vec::new(),
                        });
                    };
                    frame.undo(&mut state);
                    let idx = frame.matching.get(frame.next).copied();
                    frame.next += 1;
                    if idx.is_some() {
                        self.steps += 1;
                    }
                    match idx.filter(|_| self.steps <= MAX_STEPS) {
                        Some(idx) => {
                            let mut attempt = Attempt {
                                order_len: state.order.len(),
                                pushed: Vec::new(),
                            };
                            state.chosen.insert(frame.name.clone(), idx);
                            let added = add_dependencies(
                                &mut state,
                                &frame.name,
                                &frame.candidates[idx],
                                &self.cache,
                                &mut attempt.pushed,
                            );
                            frame.attempt = Some(attempt);
                            match added {
                                Ok(()) => Step::Expand,
                                Err(e) => Step::Failed(e),
                            }
                        }
                        None => {
                            // Exhausted (or out of steps): fail with the first error found.
                            let mut frame = frames.pop().unwrap_or_default();
                            frame.undo(&mut state);
                            Step::Failed(
                                frame
                                    .first_error
                                    .take()
                                    .unwrap_or_else(|| no_candidate(&frame.name, &state, false)),
                            )
                        }
                    }
                }
            };
        }
    }

    /// Picks the next component without a chosen version and opens a frame for it; with
    /// none left, checks the chosen set for cycles.
    fn expand(&mut self, state: &mut State, frames: &mut Vec<Frame>) -> Step {
        if state.order.len() > MAX_COMPONENTS_PER_DEPLOYMENT {
            return Step::Failed(ResolveError::TooManyComponents {
                limit: MAX_COMPONENTS_PER_DEPLOYMENT,
            });
        }
        let Some(name) = state
            .order
            .iter()
            .find(|n| !state.chosen.contains_key(*n))
            .cloned()
        else {
            return match find_cycle(state, &self.cache) {
                Some(path) => Step::Failed(ResolveError::Cycle { path }),
                None => Step::Solved,
            };
        };
        let candidates = self.candidates(&name);
        let reqs = state.reqs.get(&name).map(Vec::as_slice).unwrap_or_default();
        let matching: Vec<usize> = (0..candidates.len())
            .filter(|&i| reqs.iter().all(|(_, r)| r.matches(&candidates[i].version)))
            .collect();
        if matching.is_empty() {
            return Step::Failed(no_candidate(&name, state, candidates.is_empty()));
        }
        frames.push(Frame {
            name,
            candidates,
            matching,
            next: 0,
            attempt: None,
            first_error: None,
        });
        Step::NextCandidate
    }
}

/// What the search loop does next.
enum Step {
    /// Choose a version for the next unchosen component.
    Expand,
    /// Try the top frame's next candidate (or give up on it).
    NextCandidate,
    /// The attempt below the top frame failed with this error.
    Failed(ResolveError),
    /// Every component has a version and there is no cycle.
    Solved,
}

/// One component being chosen: its candidates and how far through them the search is.
#[derive(Default)]
struct Frame {
    name: String,
    candidates: Rc<Vec<Recipe>>,
    /// Indices into `candidates` that satisfy the requirements known when the frame opened.
    matching: Vec<usize>,
    next: usize,
    /// What the current attempt added to the shared state, to take it back.
    attempt: Option<Attempt>,
    first_error: Option<ResolveError>,
}

struct Attempt {
    /// Length of `State::order` before the attempt: components first required by it follow.
    order_len: usize,
    /// Components that gained a requirement, in order.
    pushed: Vec<String>,
}

impl Frame {
    /// Takes back the current attempt: the choice, the requirements it added and the
    /// components that only it required.
    fn undo(&mut self, state: &mut State) {
        let Some(attempt) = self.attempt.take() else {
            return;
        };
        state.chosen.remove(&self.name);
        for name in attempt.pushed.iter().rev() {
            if let Some(list) = state.reqs.get_mut(name) {
                list.pop();
            }
        }
        for name in state.order.drain(attempt.order_len..) {
            state.reqs.remove(&name);
        }
    }
}

fn no_candidate(name: &str, state: &State, unknown: bool) -> ResolveError {
    let reqs = state.rendered(name);
    if unknown || reqs.len() <= 1 {
        let (by, range) = reqs.into_iter().next().unwrap_or_default();
        return ResolveError::NotFound {
            component: name.to_owned(),
            requirement: range,
            required_by: by,
        };
    }
    ResolveError::Conflict {
        component: name.to_owned(),
        requirements: reqs,
    }
}

/// Adds the requirements of `recipe` (just chosen for `name`); fails if one contradicts a
/// version already chosen.
fn add_dependencies(
    state: &mut State,
    name: &str,
    recipe: &Recipe,
    cache: &HashMap<String, Rc<Vec<Recipe>>>,
    pushed: &mut Vec<String>,
) -> Result<(), ResolveError> {
    for (dep, spec) in &recipe.dependencies {
        state.require(dep, name, &spec.requirement);
        pushed.push(dep.clone());
        if let Some(&idx) = state.chosen.get(dep) {
            let ok = cache
                .get(dep)
                .and_then(|c| c.get(idx))
                .is_some_and(|r| spec.requirement.matches(&r.version));
            if !ok {
                return Err(ResolveError::Conflict {
                    component: dep.clone(),
                    requirements: state.rendered(dep),
                });
            }
        }
    }
    Ok(())
}

/// A dependency cycle among the chosen versions, as `a -> b -> a`.
fn find_cycle(state: &State, cache: &HashMap<String, Rc<Vec<Recipe>>>) -> Option<Vec<String>> {
    let deps = |n: &str| -> Vec<String> {
        state
            .chosen
            .get(n)
            .and_then(|&i| cache.get(n).and_then(|c| c.get(i)))
            .map(|r| r.dependencies.keys().cloned().collect())
            .unwrap_or_default()
    };
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Active,
        Done,
    }
    let mut marks: HashMap<String, Mark> = HashMap::new();
    for start in state.chosen.keys() {
        if marks.contains_key(start) {
            continue;
        }
        // Iterative DFS: (node, its dependencies, next index).
        let mut stack: Vec<(String, Vec<String>, usize)> = vec![(start.clone(), deps(start), 0)];
        marks.insert(start.clone(), Mark::Active);
        while let Some((_, children, next)) = stack.last_mut() {
            if let Some(child) = children.get(*next).cloned() {
                *next += 1;
                match marks.get(&child) {
                    Some(Mark::Active) => {
                        let from = stack.iter().position(|(n, _, _)| *n == child).unwrap_or(0);
                        let mut path: Vec<String> =
                            stack[from..].iter().map(|(n, _, _)| n.clone()).collect();
                        path.push(child);
                        return Some(path);
                    }
                    Some(Mark::Done) => {}
                    None => {
                        marks.insert(child.clone(), Mark::Active);
                        let grandchildren = deps(&child);
                        stack.push((child, grandchildren, 0));
                    }
                }
            } else if let Some((done, _, _)) = stack.pop() {
                marks.insert(done, Mark::Done);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_recipe;

    fn recipe(name: &str, version: &str, deps: &[(&str, &str)]) -> Recipe {
        let deps: serde_json::Map<String, serde_json::Value> = deps
            .iter()
            .map(|(n, r)| (n.to_string(), serde_json::json!({"VersionRequirement": r})))
            .collect();
        let doc = serde_json::json!({
            "RecipeFormatVersion": "2020-01-25",
            "ComponentName": name,
            "ComponentVersion": version,
            "ComponentDependencies": deps,
        });
        parse_recipe(&doc.to_string(), "test.json").expect("test recipe")
    }

    fn catalog(list: Vec<Recipe>) -> impl Fn(&str) -> Vec<Recipe> {
        move |name: &str| list.iter().filter(|r| r.name == name).cloned().collect()
    }

    fn root(name: &str, range: &str) -> RootRequirement {
        RootRequirement {
            name: name.into(),
            requirement: VersionRange::parse(range).expect("range"),
            origin: "LOCAL_DEPLOYMENT".into(),
        }
    }

    fn versions(r: &BTreeMap<String, Recipe>) -> Vec<String> {
        r.iter()
            .map(|(n, rc)| format!("{n}@{}", rc.version))
            .collect()
    }

    #[test]
    fn picks_highest_satisfying_versions() {
        let cat = catalog(vec![
            recipe("app", "1.0.0", &[("lib", "^1.0.0")]),
            recipe("app", "1.2.0", &[("lib", "^1.1.0")]),
            recipe("lib", "1.0.0", &[]),
            recipe("lib", "1.5.0", &[]),
            recipe("lib", "2.0.0", &[]),
        ]);
        let out = resolve_versions(&[root("app", "*")], &cat).expect("resolves");
        assert_eq!(versions(&out), ["app@1.2.0", "lib@1.5.0"]);
        let out = resolve_versions(&[root("app", "*"), root("lib", "<1.2")], &cat);
        // app 1.2.0 needs lib ^1.1.0, lib <1.2 allows 1.0.0 only -> backtrack to app 1.0.0.
        assert_eq!(
            versions(&out.expect("resolves")),
            ["app@1.0.0", "lib@1.0.0"]
        );
    }

    #[test]
    fn backtracks_over_unsatisfiable_dependencies() {
        let cat = catalog(vec![
            recipe("a", "2.0.0", &[("c", "^2.0.0")]),
            recipe("a", "1.0.0", &[("c", "^1.0.0")]),
            recipe("c", "1.5.0", &[]),
            // b's newest version needs a missing component.
            recipe("b", "3.0.0", &[("ghost", "*")]),
            recipe("b", "2.0.0", &[("a", ">=1.0.0")]),
        ]);
        let out = resolve_versions(&[root("b", "*")], &cat).expect("resolves");
        assert_eq!(versions(&out), ["a@1.0.0", "b@2.0.0", "c@1.5.0"]);
        // ghost's requirement belongs to b 3.0.0, which was not chosen: it must not appear.
        assert!(!out.contains_key("ghost"));
    }

    #[test]
    fn conflict_names_all_requirements() {
        let cat = catalog(vec![
            recipe("com.A", "1.0.0", &[("com.C", "<1.0.0")]),
            recipe("com.C", "0.9.0", &[]),
            recipe("com.C", "1.1.0", &[]),
        ]);
        let err = resolve_versions(&[root("com.A", "*"), root("com.C", "=1.1.0")], &cat)
            .expect_err("conflict");
        let msg = err.to_string();
        assert!(
            matches!(err, ResolveError::Conflict { ref component, .. } if component == "com.C"),
            "{err:?}"
        );
        assert!(msg.contains("com.A requires <1.0.0"), "{msg}");
        assert!(msg.contains("LOCAL_DEPLOYMENT requires =1.1.0"), "{msg}");
        // Same when the conflicting component was already chosen before the dependent.
        let err = resolve_versions(&[root("com.C", "=1.1.0"), root("com.A", "*")], &cat)
            .expect_err("conflict");
        let msg = err.to_string();
        assert!(
            msg.contains("com.C: ") && msg.contains("com.A requires <1.0.0"),
            "{msg}"
        );
        assert!(msg.contains("LOCAL_DEPLOYMENT requires =1.1.0"), "{msg}");
    }

    #[test]
    fn not_found_names_requirer() {
        let cat = catalog(vec![recipe("app", "1.0.0", &[("missing.Dep", "^2.0.0")])]);
        let err = resolve_versions(&[root("app", "*")], &cat).expect_err("missing");
        assert_eq!(
            err,
            ResolveError::NotFound {
                component: "missing.Dep".into(),
                requirement: "^2.0.0".into(),
                required_by: "app".into()
            }
        );
        let err = resolve_versions(&[root("app", ">=2")], &cat).expect_err("no version");
        assert!(err.to_string().contains("app") && err.to_string().contains("LOCAL_DEPLOYMENT"));
    }

    #[test]
    fn cycles_are_reported() {
        let cat = catalog(vec![
            recipe("a", "1.0.0", &[("b", "*")]),
            recipe("b", "1.0.0", &[("a", "*")]),
            recipe("self", "1.0.0", &[("self", "*")]),
        ]);
        let err = resolve_versions(&[root("a", "*")], &cat).expect_err("cycle");
        assert_eq!(
            err,
            ResolveError::Cycle {
                path: vec!["a".into(), "b".into(), "a".into()]
            }
        );
        assert_eq!(err.to_string(), "dependency cycle: a -> b -> a");
        let err = resolve_versions(&[root("self", "*")], &cat).expect_err("cycle");
        assert_eq!(err.to_string(), "dependency cycle: self -> self");
    }

    #[test]
    fn cycle_in_newest_version_is_avoided_by_backtracking() {
        let cat = catalog(vec![
            recipe("a", "2.0.0", &[("b", "*")]),
            recipe("a", "1.0.0", &[]),
            recipe("b", "1.0.0", &[("a", "*")]),
        ]);
        let out = resolve_versions(&[root("a", "*")], &cat).expect("resolves");
        assert_eq!(versions(&out), ["a@1.0.0"]);
    }

    #[test]
    fn hopeless_search_is_bounded() {
        // 12^4 combinations, all failing at the bottom: the search still ends quickly.
        let mut list = Vec::new();
        let levels = ["l0", "l1", "l2", "l3", "l4"];
        for (i, name) in levels.iter().enumerate() {
            for minor in 0..12 {
                let next = levels.get(i + 1).copied().unwrap_or("ghost");
                list.push(recipe(name, &format!("1.{minor}.0"), &[(next, "*")]));
            }
        }
        let started = std::time::Instant::now();
        let err = resolve_versions(&[root("l0", "*")], &catalog(list)).expect_err("ghost");
        assert!(
            matches!(err, ResolveError::NotFound { ref component, .. } if component == "ghost"),
            "{err}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }

    fn chain(len: usize) -> Vec<Recipe> {
        (0..len)
            .map(|i| {
                let next = format!("c{}", i + 1);
                let deps: &[(&str, &str)] = if i + 1 < len { &[(&next, "^1")] } else { &[] };
                recipe(&format!("c{i}"), "1.0.0", deps)
            })
            .collect()
    }

    // These run on the default test-thread stack; the recursive resolver overflowed it
    // with a few hundred components.
    #[test]
    fn ten_times_the_bound_is_refused_without_overflowing_the_stack() {
        let n = MAX_COMPONENTS_PER_DEPLOYMENT * 10;
        let err = resolve_versions(&[root("c0", "*")], &catalog(chain(n))).expect_err("chain");
        assert_eq!(
            err,
            ResolveError::TooManyComponents {
                limit: MAX_COMPONENTS_PER_DEPLOYMENT
            }
        );
        assert!(
            err.to_string().contains("more than 500 components"),
            "{err}"
        );

        let names: Vec<String> = (0..n).map(|i| format!("dep{i}")).collect();
        let deps: Vec<(&str, &str)> = names.iter().map(|d| (d.as_str(), "*")).collect();
        let mut list: Vec<Recipe> = names.iter().map(|d| recipe(d, "1.0.0", &[])).collect();
        list.push(recipe("wide", "1.0.0", &deps));
        let err = resolve_versions(&[root("wide", "*")], &catalog(list)).expect_err("wide");
        assert!(
            matches!(err, ResolveError::TooManyComponents { .. }),
            "{err}"
        );

        let roots: Vec<RootRequirement> = names.iter().map(|d| root(d, "*")).collect();
        let err = resolve_versions(&roots, &catalog(Vec::new())).expect_err("roots");
        assert!(
            matches!(err, ResolveError::TooManyComponents { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_chain_as_long_as_the_bound_resolves_and_backtracks_at_its_end() {
        let n = MAX_COMPONENTS_PER_DEPLOYMENT;
        let out = resolve_versions(&[root("c0", "*")], &catalog(chain(n))).expect("chain");
        assert_eq!(out.len(), n);
        // The newest head needs a missing component at the very bottom; the search must
        // unwind the whole chain and settle on the older head.
        let mut list = chain(n - 1);
        list[n - 2] = recipe(&format!("c{}", n - 2), "1.0.0", &[("ghost", "*")]);
        list.push(recipe("c0", "0.9.0", &[]));
        let out = resolve_versions(&[root("c0", "*")], &catalog(list)).expect("backtracks");
        assert_eq!(versions(&out), ["c0@0.9.0"]);
    }

    #[test]
    fn diamond_and_shared_requirements() {
        let cat = catalog(vec![
            recipe("top", "1.0.0", &[("left", "*"), ("right", "*")]),
            recipe("left", "1.0.0", &[("base", ">=1.1.0")]),
            recipe("right", "1.0.0", &[("base", "<1.3.0")]),
            recipe("base", "1.0.0", &[]),
            recipe("base", "1.2.0", &[]),
            recipe("base", "1.2.0", &[]),
            recipe("base", "1.4.0", &[]),
        ]);
        let out = resolve_versions(&[root("top", "^1")], &cat).expect("resolves");
        assert_eq!(
            versions(&out),
            ["base@1.2.0", "left@1.0.0", "right@1.0.0", "top@1.0.0"]
        );
        assert!(resolve_versions(&[], &cat).expect("empty").is_empty());
    }
}

//! The key browser: tensors as a tree by dotted prefix, each node with its tensor count and
//! size (drawn as a bar against the whole file), expanded on click; a filter box switches to a
//! flat list of matching keys. Clicking a tensor asks the engine for its statistics.

use ldmkit_core::units::bytes;
use leptos::prelude::*;
use serde_json::Value;
use std::collections::HashSet;

/// One node of the tree: a dotted prefix, and/or a tensor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Node {
    /// What the row shows: one name segment, or a chain of single-child segments joined.
    pub label: String,
    /// The full dotted prefix (the tensor's name at a leaf).
    pub path: String,
    pub bytes: f64,
    pub tensors: usize,
    pub children: Vec<Node>,
    /// Index of the tensor with exactly this name.
    pub tensor: Option<usize>,
}

impl Node {
    /// The tree of `names` (with their sizes), in the order the file lists them.
    pub fn build<'a>(names: impl IntoIterator<Item = (&'a str, f64)>) -> Node {
        let mut root = Node::default();
        for (index, (name, bytes)) in names.into_iter().enumerate() {
            let mut node = &mut root;
            node.bytes += bytes;
            node.tensors += 1;
            // Tree levels are `/` (nesting in the file) and `.` (within a state-dict key).
            let ends = name
                .char_indices()
                .filter(|(_, c)| matches!(c, '/' | '.'))
                .map(|(i, _)| i)
                .chain([name.len()]);
            let mut start = 0;
            for end in ends {
                let segment = &name[start..end];
                let at = match node.children.iter().position(|c| c.label == segment) {
                    Some(at) => at,
                    None => {
                        node.children.push(Node {
                            label: segment.to_string(),
                            path: name[..end].to_string(),
                            ..Node::default()
                        });
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[at];
                node.bytes += bytes;
                node.tensors += 1;
                start = end + 1;
            }
            node.tensor = Some(index);
        }
        for child in &mut root.children {
            child.compress();
        }
        root
    }

    /// Join chains of single children (`cond_stage_model.transformer.text_model`): one click
    /// instead of three.
    fn compress(&mut self) {
        while self.tensor.is_none() && self.children.len() == 1 {
            let child = self.children.pop().expect("one child");
            // The child's path adds its separator and label to ours.
            self.label += &child.path[self.path.len()..];
            self.path = child.path;
            self.children = child.children;
            self.tensor = child.tensor;
        }
        for child in &mut self.children {
            child.compress();
        }
    }

    /// The rows shown: children of the root, and below every expanded node its children.
    pub fn visible<'a>(&'a self, expanded: &HashSet<String>) -> Vec<(usize, &'a Node)> {
        fn walk<'a>(
            node: &'a Node,
            depth: usize,
            expanded: &HashSet<String>,
            out: &mut Vec<(usize, &'a Node)>,
        ) {
            for child in &node.children {
                out.push((depth, child));
                if expanded.contains(&child.path) {
                    walk(child, depth + 1, expanded, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self, 0, expanded, &mut out);
        out
    }
}

/// At most this many rows of a filtered list are drawn.
const MAX_MATCHES: usize = 300;

#[component]
pub fn KeyTree(
    tensors: Vec<Value>,
    filter: ReadSignal<String>,
    set_filter: WriteSignal<String>,
    on_tensor: impl Fn(String) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let name = |t: &Value| t["name"].as_str().unwrap_or("").to_string();
    let tree = Node::build(tensors.iter().map(|t| {
        (
            t["name"].as_str().unwrap_or(""),
            t["bytes"].as_f64().unwrap_or(0.0),
        )
    }));
    let total = tree.bytes.max(1.0);
    let (expanded, set_expanded) = signal(HashSet::<String>::new());
    let tensors = StoredValue::new(tensors);
    let tree = StoredValue::new(tree);
    let leaf_cells = move |index: usize| {
        tensors.with_value(|ts| {
            let t = &ts[index];
            (
                t["dtype"].as_str().unwrap_or("").to_string(),
                t["shape"].to_string(),
            )
        })
    };
    let rows = move || {
        let f = filter.get();
        if !f.is_empty() {
            return tensors.with_value(|ts| {
                ts.iter()
                    .enumerate()
                    .filter(|(_, t)| name(t).contains(&f))
                    .take(MAX_MATCHES)
                    .map(|(i, t)| {
                        let key = name(t);
                        let (dtype, shape) = leaf_cells(i);
                        let size = t["bytes"].as_f64().unwrap_or(0.0);
                        view! {
                            <tr class="key" on:click=move |_| on_tensor(key.clone())>
                                <td>{name(t)}</td><td>{dtype}</td><td>{shape}</td><td>{bytes(size as u64)}</td>
                            </tr>
                        }
                        .into_any()
                    })
                    .collect_view()
            });
        }
        let open = expanded.get();
        tree.with_value(|tree| {
            tree.visible(&open)
                .into_iter()
                .map(|(depth, node)| {
                    let pad = format!("padding-left:{}rem", 0.4 + 1.1 * depth as f64);
                    let pct = format!("width:{:.1}%", 100.0 * node.bytes / total);
                    let path = node.path.clone();
                    if let (Some(index), true) = (node.tensor, node.children.is_empty()) {
                        let (dtype, shape) = leaf_cells(index);
                        view! {
                            <tr class="key" on:click=move |_| on_tensor(path.clone())>
                                <td style=pad>{node.label.clone()}</td><td>{dtype}</td><td>{shape}</td>
                                <td><span class="mini-bar"><span class="fill" style=pct></span></span>{bytes(node.bytes as u64)}</td>
                            </tr>
                        }
                        .into_any()
                    } else {
                        let is_open = open.contains(&node.path);
                        let toggle = move |_| {
                            set_expanded.update(|e| {
                                if !e.remove(&path) {
                                    e.insert(path.clone());
                                }
                            })
                        };
                        view! {
                            <tr class="prefix" on:click=toggle>
                                <td style=pad>{if is_open { "▾ " } else { "▸ " }}{node.label.clone()}</td>
                                <td colspan="2" class="muted">{format!("{} tensors", node.tensors)}</td>
                                <td><span class="mini-bar"><span class="fill" style=pct></span></span>{bytes(node.bytes as u64)}</td>
                            </tr>
                        }
                        .into_any()
                    }
                })
                .collect_view()
        })
    };
    view! {
        <input id="filter" placeholder="filter, e.g. attn2.to_k" prop:value=move || filter.get()
            on:input=move |ev| set_filter.set(event_target_value(&ev))/>
        <div class="keys-box">
            <table class="keys" id="keys">
                <tr><th>"name"</th><th>"dtype"</th><th>"shape"</th><th>"size"</th></tr>
                {rows}
            </table>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_groups_by_prefix_and_joins_single_child_chains() {
        let tree = Node::build([
            ("state_dict.model.diffusion_model.a.weight", 8.0),
            ("state_dict.model.diffusion_model.a.bias", 2.0),
            ("state_dict.model.diffusion_model.b", 4.0),
            ("epoch", 0.0),
            ("optimizer_states/0/state/1/exp_avg", 1.0),
        ]);
        assert_eq!(tree.tensors, 5);
        assert_eq!(tree.bytes, 15.0);
        let top: Vec<&str> = tree.children.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(
            top,
            [
                "state_dict.model.diffusion_model",
                "epoch",
                "optimizer_states/0/state/1/exp_avg"
            ]
        );
        assert_eq!(tree.children[2].tensor, Some(4));
        let unet = &tree.children[0];
        assert_eq!(unet.path, "state_dict.model.diffusion_model");
        assert_eq!((unet.tensors, unet.bytes), (3, 14.0));
        assert_eq!(unet.children[0].label, "a");
        assert_eq!(
            unet.children[0].children[1].path,
            "state_dict.model.diffusion_model.a.bias"
        );
        assert_eq!(unet.children[0].children[1].tensor, Some(1));

        let collapsed = tree.visible(&HashSet::new());
        assert_eq!(collapsed.len(), 3);
        let open: HashSet<String> = ["state_dict.model.diffusion_model".to_string()].into();
        let rows: Vec<(usize, &str)> = tree
            .visible(&open)
            .into_iter()
            .map(|(d, n)| (d, n.label.as_str()))
            .collect();
        assert_eq!(
            rows,
            [
                (0, "state_dict.model.diffusion_model"),
                (1, "a"),
                (1, "b"),
                (0, "epoch"),
                (0, "optimizer_states/0/state/1/exp_avg")
            ]
        );
    }
}

//! Reading the query APIs' XML answers: elements by local name (the namespaces differ by
//! service and version), lists as `member` (Auto Scaling, CloudWatch) or `item` (EC2) children.

pub use roxmltree::{Document, Node};

/// The answer, parsed; the error names the call and says what was wrong.
pub fn parse<'a>(text: &'a str, call: &str) -> Result<Document<'a>, crate::PluginError> {
    Document::parse(text)
        .map_err(|e| crate::PluginError::Other(format!("{call}: the answer is not XML ({e})")))
}

/// The first child element named `name`.
pub fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|n| n.is_element() && n.tag_name().name() == name)
}

/// The first element named `name` anywhere below `node`.
pub fn find<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.descendants().find(|n| n.is_element() && n.tag_name().name() == name)
}

/// The trimmed text of the child element `name`; `None` when absent or empty.
pub fn text(node: Node, name: &str) -> Option<String> {
    child(node, name).and_then(|n| n.text()).map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
}

/// The entries of the list element `name` (its `member` or `item` children).
pub fn list<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Vec<Node<'a, 'i>> {
    child(node, name)
        .map(|l| {
            l.children()
                .filter(|n| n.is_element() && matches!(n.tag_name().name(), "member" | "item"))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_texts_by_local_name() {
        let doc = Document::parse(r#"<R xmlns="http://x/"><Result><Items><member><Id> a </Id></member><member><Id>b</Id></member></Items><Empty/></Result></R>"#).unwrap();
        let result = find(doc.root(), "Result").unwrap();
        let ids: Vec<String> = list(result, "Items").into_iter().filter_map(|m| text(m, "Id")).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(text(result, "Empty"), None);
        assert!(list(result, "Missing").is_empty());
    }
}

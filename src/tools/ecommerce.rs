//! Zaraz's 19 ecommerce events and what each destination calls them.
//!
//! Zaraz names are fixed (its E-commerce API reference); the destination
//! names are GA4's recommended events and Meta's standard events. An event
//! without a native counterpart keeps its own name (GA4: snake_cased).

/// (Zaraz event, GA4 event, Meta standard event)
const TABLE: [(&str, &str, Option<&str>); 19] = [
    // Meta: ViewContent is a product page's view, not a list's (Zaraz's
    // Meta tool also sends this one under its own name).
    ("Product List Viewed", "view_item_list", None),
    ("Products Searched", "search", Some("Search")),
    ("Product Clicked", "select_item", None),
    ("Product Added", "add_to_cart", Some("AddToCart")),
    (
        "Product Added to Wishlist",
        "add_to_wishlist",
        Some("AddToWishlist"),
    ),
    ("Product Removed", "remove_from_cart", None),
    ("Product Viewed", "view_item", Some("ViewContent")),
    ("Cart Viewed", "view_cart", None),
    (
        "Checkout Started",
        "begin_checkout",
        Some("InitiateCheckout"),
    ),
    ("Checkout Step Viewed", "checkout_step_viewed", None),
    ("Checkout Step Completed", "checkout_step_completed", None),
    (
        "Payment Info Entered",
        "add_payment_info",
        Some("AddPaymentInfo"),
    ),
    ("Shipping Info Entered", "add_shipping_info", None),
    ("Order Completed", "purchase", Some("Purchase")),
    ("Order Updated", "order_updated", None),
    ("Order Refunded", "refund", None),
    ("Order Cancelled", "order_cancelled", None),
    ("Clicked Promotion", "select_promotion", None),
    ("Viewed Promotion", "view_promotion", None),
];

/// GA4's name for an ecommerce event.
pub fn ga4_name(zaraz: &str) -> String {
    TABLE
        .iter()
        .find(|(z, _, _)| *z == zaraz)
        .map(|(_, g, _)| g.to_string())
        .unwrap_or_else(|| snake_case(zaraz))
}

/// Meta's name for an ecommerce event (custom events keep their name).
pub fn meta_name(zaraz: &str) -> String {
    TABLE
        .iter()
        .find(|(z, _, _)| *z == zaraz)
        .and_then(|(_, _, m)| *m)
        .unwrap_or(zaraz)
        .to_string()
}

/// `Some Event-Name` → `some_event_name`.
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.trim().chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings() {
        assert_eq!(ga4_name("Order Completed"), "purchase");
        assert_eq!(ga4_name("Product Added"), "add_to_cart");
        assert_eq!(ga4_name("Something Custom!"), "something_custom");
        assert_eq!(meta_name("Order Completed"), "Purchase");
        assert_eq!(meta_name("Checkout Started"), "InitiateCheckout");
        assert_eq!(meta_name("Order Refunded"), "Order Refunded");
        // The seven Zaraz's Meta tool maps, and no others.
        let meta: Vec<(&str, &str)> = TABLE
            .iter()
            .filter_map(|(z, _, m)| Some((*z, (*m)?)))
            .collect();
        assert_eq!(
            meta,
            [
                ("Products Searched", "Search"),
                ("Product Added", "AddToCart"),
                ("Product Added to Wishlist", "AddToWishlist"),
                ("Product Viewed", "ViewContent"),
                ("Checkout Started", "InitiateCheckout"),
                ("Payment Info Entered", "AddPaymentInfo"),
                ("Order Completed", "Purchase"),
            ]
        );
        assert_eq!(TABLE.len(), 19);
    }
}

/* tagproxy client script: PLACEHOLDER until the events issue lands.
   It defines window.zaraz and keeps every call in window.zaraz.q; nothing is sent yet. */
(function (w) {
  var z = (w.zaraz = w.zaraz || {});
  var q = (z.q = z.q || []);
  ["track", "set", "ecommerce", "spaPageview", "debug"].forEach(function (m) {
    if (!z[m]) {
      z[m] = function () {
        q.push([m, Array.prototype.slice.call(arguments)]);
        return Promise.resolve();
      };
    }
  });
})(window);

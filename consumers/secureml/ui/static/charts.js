// Draws the charts page's Plotly figures from /charts/data.json (no inline script: the CSP allows none).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  fetch("/charts/data.json", {credentials: "same-origin"})
    .then(function (response) {
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.json();
    })
    .then(function (figures) {
      document.querySelectorAll("[data-figure]").forEach(function (element) {
        var figure = figures[element.dataset.figure];
        Plotly.newPlot(element, figure.data, figure.layout, {displaylogo: false, responsive: true});
        element.classList.add("drawn");
      });
    })
    .catch(function (error) {
      document.querySelectorAll("[data-figure]").forEach(function (element) {
        element.textContent = "The chart data could not be loaded (" + error.message + "): reload the page.";
      });
    });
});
